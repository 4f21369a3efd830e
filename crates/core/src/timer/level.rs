//! One level of the wheel: 64 slots and an occupied bitmap.
