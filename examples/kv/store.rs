//! The keyspace: values by key, and every TTL as a timer on the reactor's
//! wheel, so that an expired key is gone (and its memory freed) within a
//! tick or so of its deadline, and no read ever sees it after.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ontime::TimerId;

pub(crate) type List = VecDeque<Box<[u8]>>;
pub(crate) type Hash = HashMap<Box<[u8]>, Box<[u8]>>;

/// A value. The collections are boxed so that a value is 24 bytes, the
/// size of a string's: most keys hold strings, and every key pays for the
/// largest variant.
#[derive(Debug)]
#[allow(clippy::box_collection)]
pub(crate) enum Value {
    Str(Box<[u8]>),
    List(Box<List>),
    Hash(Box<Hash>),
}

impl Value {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
        }
    }
}

/// A key's TTL: its deadline, and the wheel timer that removes it then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ttl {
    /// The deadline, as the time since `Store::epoch` (a `Duration` holds
    /// the TTLs of millions of years that Redis takes, in 16 bytes aligned
    /// to 8, so that the boxed TTL stays in a 32-byte allocation): the key
    /// is gone from then on.
    pub(crate) at: Duration,
    pub(crate) timer: TimerId,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) value: Value,
    /// Boxed: most keys have none, and every entry pays for the field:
    /// 8 bytes boxed, 24 inline (the table holds each entry
    /// inline, at a load of at most 7/8, and a million keys take two
    /// million slots).
    pub(crate) ttl: Option<Box<Ttl>>,
}

/// What removing a key left to do: the timer to cancel, if it had one.
#[must_use]
pub(crate) struct Removed(pub Option<TimerId>);

#[derive(Debug)]
pub(crate) struct Store {
    map: HashMap<Box<[u8]>, Entry>,
    /// How many keys have a TTL.
    volatile: usize,
    epoch: Instant,
    pub(crate) expired: u64,
}

impl Store {
    pub(crate) fn new() -> Store {
        Store {
            map: HashMap::new(),
            volatile: 0,
            epoch: Instant::now(),
            expired: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn volatile(&self) -> usize {
        self.volatile
    }

    /// Now, on the store's clock.
    pub(crate) fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The instant of a deadline (saturating: a deadline millions of years
    /// away is as good as never).
    pub(crate) fn instant(&self, at: Duration) -> Instant {
        self.epoch
            .checked_add(at)
            .unwrap_or_else(|| self.epoch + Duration::from_secs(1 << 40))
    }

    /// The live entry of `key`. A key past its deadline whose timer has not
    /// fired yet (it fires on the tick after) is removed here, so a read
    /// never sees it late; the timer to cancel is returned with it.
    pub(crate) fn get(&mut self, key: &[u8]) -> (Option<&mut Entry>, Option<TimerId>) {
        let expired = match self.map.get(key) {
            None => return (None, None),
            Some(entry) => entry.ttl.as_ref().is_some_and(|ttl| self.now() >= ttl.at),
        };
        if expired {
            let Removed(timer) = self.remove(key);
            self.expired += 1;
            return (None, timer);
        }
        (self.map.get_mut(key), None)
    }

    /// Inserts or replaces `key`; a TTL the old value had is returned to be
    /// cancelled (as SET does, unless it keeps the TTL).
    pub(crate) fn set(&mut self, key: &[u8], value: Value) -> Removed {
        if let Some(entry) = self.map.get_mut(key) {
            entry.value = value;
            let old = entry.ttl.take();
            if old.is_some() {
                self.volatile -= 1;
            }
            return Removed(old.map(|ttl| ttl.timer));
        }
        self.map.insert(key.into(), Entry { value, ttl: None });
        Removed(None)
    }

    /// Inserts a value for a key known to be absent.
    pub(crate) fn insert(&mut self, key: &[u8], value: Value) -> &mut Entry {
        self.map
            .entry(key.into())
            .or_insert(Entry { value, ttl: None })
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Removed {
        match self.map.remove(key) {
            Some(Entry { ttl: Some(ttl), .. }) => {
                self.volatile -= 1;
                Removed(Some(ttl.timer))
            }
            _ => Removed(None),
        }
    }

    /// Sets the TTL of a present key; returns the timer it replaces.
    pub(crate) fn set_ttl(&mut self, key: &[u8], ttl: Ttl) -> Removed {
        let Some(entry) = self.map.get_mut(key) else {
            return Removed(Some(ttl.timer));
        };
        let old = entry.ttl.replace(Box::new(ttl));
        if old.is_none() {
            self.volatile += 1;
        }
        Removed(old.map(|ttl| ttl.timer))
    }

    pub(crate) fn persist(&mut self, key: &[u8]) -> Removed {
        let Some(entry) = self.map.get_mut(key) else {
            return Removed(None);
        };
        let old = entry.ttl.take();
        if old.is_some() {
            self.volatile -= 1;
        }
        Removed(old.map(|ttl| ttl.timer))
    }

    /// The timer of `key` fired: remove it if that timer is still its TTL.
    pub(crate) fn expire(&mut self, key: &[u8], timer: TimerId) {
        let current = self
            .map
            .get(key)
            .and_then(|entry| entry.ttl.as_ref())
            .is_some_and(|ttl| ttl.timer == timer);
        if current {
            let Removed(_) = self.remove(key);
            self.expired += 1;
        }
    }

    /// Shrinks the table if at most a quarter of it is used; returns
    /// whether it did. (A hash table never shrinks on its own: after a
    /// million keys expire, their slots would stay.)
    pub(crate) fn shrink_if_sparse(&mut self) -> bool {
        let (len, capacity) = (self.map.len(), self.map.capacity());
        if capacity < 4096 || len * 4 > capacity {
            return false;
        }
        self.map.shrink_to(len * 2);
        true
    }

    /// Empties the store; returns the timers to cancel.
    pub(crate) fn clear(&mut self) -> Vec<TimerId> {
        let timers = self
            .map
            .drain()
            .filter_map(|(_, entry)| entry.ttl.map(|ttl| ttl.timer))
            .collect();
        self.volatile = 0;
        self.map.shrink_to_fit();
        timers
    }
}
