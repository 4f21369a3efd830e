//! The commands: names, arity, and what each does to the store and replies,
//! with Redis's replies and error messages (clients match on them).

use std::collections::VecDeque;
use std::time::Duration;

use ontime::serve::{Conn, Context};

use super::resp::{parse_int, Args, Out, Reply};
use super::store::{Entry, Removed, Ttl, Value};
use super::{Client, Kv};

pub(crate) const WRONGTYPE: &str =
    "WRONGTYPE Operation against a key holding the wrong kind of value";
pub(crate) const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub(crate) const SYNTAX: &str = "ERR syntax error";

/// The command name, lowercased into `buf` (names longer than it are no
/// command of ours).
pub(crate) fn lowercase<'a>(name: &[u8], buf: &'a mut [u8; 16]) -> Option<&'a [u8]> {
    let out = buf.get_mut(..name.len())?;
    for (o, &b) in out.iter_mut().zip(name) {
        *o = b.to_ascii_lowercase();
    }
    Some(out)
}

/// Arity as Redis gives it: `n` exactly n arguments (the name included),
/// `-n` at least n.
pub(crate) fn arity(name: &[u8]) -> Option<i32> {
    Some(match name {
        b"ping" => -1,
        b"echo" => 2,
        b"set" => -3,
        b"get" | b"getdel" | b"incr" | b"decr" | b"strlen" | b"ttl" | b"pttl" | b"persist"
        | b"type" | b"llen" | b"hgetall" | b"hlen" => 2,
        b"del" | b"exists" | b"mget" | b"lpop" | b"rpop" | b"subscribe" | b"client" | b"config" => {
            -2
        }
        b"incrby" | b"decrby" | b"append" | b"hget" | b"publish" => 3,
        b"mset" | b"expire" | b"pexpire" | b"lpush" | b"rpush" | b"hdel" => -3,
        b"lrange" | b"hincrby" => 4,
        b"hset" => -4,
        b"dbsize" => 1,
        b"flushdb" | b"flushall" | b"unsubscribe" | b"info" | b"command" | b"quit" => -1,
        b"select" => 2,
        b"hello" => -1,
        _ => return None,
    })
}

/// Whether a command may run in subscribed mode (RESP2).
pub(crate) fn allowed_subscribed(name: &[u8]) -> bool {
    matches!(name, b"subscribe" | b"unsubscribe" | b"ping" | b"quit")
}

/// An error message made safe to send: no CR or LF inside.
pub(crate) fn sanitized(message: String) -> String {
    message.replace(['\r', '\n'], " ")
}

/// `ERR unknown command 'x', with args beginning with: 'a' 'b' `, as Redis 7.
pub(crate) fn unknown(input: &[u8], args: &Args) -> String {
    let name = String::from_utf8_lossy(truncated(args.get(input, 0), 128));
    let mut rest = String::new();
    for i in 1..args.len() {
        if rest.len() >= 128 {
            break;
        }
        let room = 128 - rest.len();
        let arg = String::from_utf8_lossy(truncated(args.get(input, i), room));
        rest.push('\'');
        rest.push_str(&arg);
        rest.push_str("' ");
    }
    sanitized(format!(
        "ERR unknown command '{name}', with args beginning with: {rest}"
    ))
}

fn truncated(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

fn int_arg(input: &[u8], args: &Args, i: usize) -> Option<i64> {
    parse_int(args.get(input, i))
}

/// A TTL of `ms` milliseconds from now, as a deadline on the store's
/// clock: exactly the TTL after now, so that a key lives its TTL and not a
/// moment more (Redis adds it to the current millisecond, rounded down, and
/// expires the key once a later millisecond has begun, so it may serve a
/// key up to 1 ms past its TTL); `None` on overflow.
fn deadline_after(kv: &Kv, ms: i64) -> Option<Duration> {
    // Redis keeps absolute Unix milliseconds in an i64: a TTL that would
    // overflow one is invalid there, and so here.
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    ms.checked_add(unix_ms)?;
    let ms = u64::try_from(ms).ok()?;
    kv.store.now().checked_add(Duration::from_millis(ms))
}

fn cancel<S: ontime::serve::Service>(cx: &mut Context<'_, S>, removed: Removed) {
    if let Removed(Some(timer)) = removed {
        cx.cancel_timer(timer);
    }
}

/// Looks up a live key, cancelling the timer of one found expired.
macro_rules! lookup {
    ($kv:expr, $conn:expr, $key:expr) => {{
        let (entry, timer) = $kv.store.get($key);
        if let Some(timer) = timer {
            $conn.cancel_timer(timer);
        }
        entry
    }};
}

/// The collection of kind `$kind` (`List` or `Hash`) at a live key, made
/// empty if the key is absent; `None` if the key holds another kind.
macro_rules! collection {
    ($kv:expr, $conn:expr, $key:expr, $kind:ident) => {
        match lookup!($kv, $conn, $key) {
            Some(Entry {
                value: Value::$kind(collection),
                ..
            }) => Some(collection),
            Some(_) => None,
            None => match &mut $kv.store.insert($key, Value::$kind(Box::default())).value {
                Value::$kind(collection) => Some(collection),
                _ => unreachable!("just inserted"),
            },
        }
    };
}

/// Gives `key` a TTL with deadline `at` (the key is present).
fn arm(kv: &mut Kv, conn: &mut Conn<'_, Kv>, key: &[u8], at: Duration) {
    let timer = conn.timer_at(kv.store.instant(at), Some(key.into()));
    let removed = kv.store.set_ttl(key, Ttl { at, timer });
    cancel(conn, removed);
}

/// Runs one request. `name` is the lowercased command name, whose arity
/// was checked.
pub(crate) fn execute(
    kv: &mut Kv,
    conn: &mut Conn<'_, Kv>,
    client: &mut Client,
    name: &[u8],
    input: &[u8],
    args: &Args,
    out: &mut Out,
) {
    let arg = |i: usize| args.get(input, i);
    let argc = args.len();
    match name {
        b"ping" => match argc {
            1 if client.subscriptions() > 0 => {
                out.array(2);
                out.bulk(b"pong");
                out.bulk(b"");
            }
            1 => out.simple("PONG"),
            2 if client.subscriptions() > 0 => {
                out.array(2);
                out.bulk(b"pong");
                out.bulk(arg(1));
            }
            2 => out.bulk(arg(1)),
            _ => out.error("ERR wrong number of arguments for 'ping' command"),
        },
        b"echo" => out.bulk(arg(1)),
        b"quit" => {
            out.ok();
            conn.close_when_flushed();
        }
        b"select" => match int_arg(input, args, 1) {
            Some(0) => out.ok(),
            Some(_) => out.error("ERR DB index is out of range"),
            None => out.error(NOT_INTEGER),
        },
        b"set" => set(kv, conn, input, args, out),
        b"get" => match lookup!(kv, conn, arg(1)) {
            None => out.null(),
            Some(Entry {
                value: Value::Str(s),
                ..
            }) => out.bulk(s),
            Some(_) => out.error(WRONGTYPE),
        },
        b"getdel" => {
            match lookup!(kv, conn, arg(1)) {
                None => return out.null(),
                Some(Entry {
                    value: Value::Str(s),
                    ..
                }) => out.bulk(s),
                Some(_) => return out.error(WRONGTYPE),
            }
            let removed = kv.store.remove(arg(1));
            cancel(conn, removed);
        }
        b"del" => {
            let mut n = 0;
            for i in 1..argc {
                if lookup!(kv, conn, arg(i)).is_some() {
                    let removed = kv.store.remove(arg(i));
                    cancel(conn, removed);
                    n += 1;
                }
            }
            out.int(n);
        }
        b"exists" => {
            let mut n = 0;
            for i in 1..argc {
                n += i64::from(lookup!(kv, conn, arg(i)).is_some());
            }
            out.int(n);
        }
        b"incr" => incr_by(kv, conn, arg(1), 1, out),
        b"decr" => incr_by(kv, conn, arg(1), -1, out),
        b"incrby" | b"decrby" => match int_arg(input, args, 2) {
            None => out.error(NOT_INTEGER),
            Some(by) if name == b"incrby" => incr_by(kv, conn, arg(1), by, out),
            Some(by) => match by.checked_neg() {
                Some(by) => incr_by(kv, conn, arg(1), by, out),
                None => out.error("ERR decrement would overflow"),
            },
        },
        b"append" => match lookup!(kv, conn, arg(1)) {
            None => {
                kv.store.insert(arg(1), Value::Str(arg(2).into()));
                out.int(arg(2).len() as i64);
            }
            Some(Entry {
                value: Value::Str(s),
                ..
            }) => {
                let mut joined = Vec::with_capacity(s.len() + arg(2).len());
                joined.extend_from_slice(s);
                joined.extend_from_slice(arg(2));
                out.int(joined.len() as i64);
                *s = joined.into_boxed_slice();
            }
            Some(_) => out.error(WRONGTYPE),
        },
        b"strlen" => match lookup!(kv, conn, arg(1)) {
            None => out.int(0),
            Some(Entry {
                value: Value::Str(s),
                ..
            }) => out.int(s.len() as i64),
            Some(_) => out.error(WRONGTYPE),
        },
        b"mget" => {
            out.array(argc - 1);
            for i in 1..argc {
                match lookup!(kv, conn, arg(i)) {
                    Some(Entry {
                        value: Value::Str(s),
                        ..
                    }) => out.bulk(s),
                    _ => out.null(),
                }
            }
        }
        b"mset" => {
            if argc % 2 == 0 {
                return out.error("ERR wrong number of arguments for 'mset' command");
            }
            for i in (1..argc).step_by(2) {
                let removed = kv.store.set(arg(i), Value::Str(arg(i + 1).into()));
                cancel(conn, removed);
            }
            out.ok();
        }
        b"expire" | b"pexpire" => expire(kv, conn, name, input, args, out),
        b"ttl" | b"pttl" => {
            let ttl = match lookup!(kv, conn, arg(1)) {
                None => return out.int(-2),
                Some(Entry { ttl: None, .. }) => return out.int(-1),
                Some(Entry { ttl: Some(ttl), .. }) => ttl.at,
            };
            let left_ns = ttl.saturating_sub(kv.store.now()).as_nanos();
            // Rounded up, so that right after `PX n` this is n, as in
            // Redis (0 only if the deadline passed since the lookup, as
            // Redis too may answer).
            let left_ms = left_ns.div_ceil(1_000_000) as i64;
            if name == b"ttl" {
                out.int((left_ms + 500) / 1000);
            } else {
                out.int(left_ms);
            }
        }
        b"persist" => {
            if lookup!(kv, conn, arg(1)).is_none() {
                return out.int(0);
            }
            let removed = kv.store.persist(arg(1));
            let had = removed.0.is_some();
            cancel(conn, removed);
            out.int(i64::from(had));
        }
        b"type" => match lookup!(kv, conn, arg(1)) {
            None => out.simple("none"),
            Some(entry) => out.simple(entry.value.type_name()),
        },
        b"dbsize" => out.int(kv.store.len() as i64),
        b"flushdb" | b"flushall" => {
            match argc {
                1 => {}
                2 if arg(1).eq_ignore_ascii_case(b"sync")
                    || arg(1).eq_ignore_ascii_case(b"async") => {}
                _ => return out.error(SYNTAX),
            }
            for timer in kv.store.clear() {
                conn.cancel_timer(timer);
            }
            out.ok();
        }
        b"lpush" | b"rpush" => {
            let Some(list) = collection!(kv, conn, arg(1), List) else {
                return out.error(WRONGTYPE);
            };
            for i in 2..argc {
                if name == b"lpush" {
                    list.push_front(arg(i).into());
                } else {
                    list.push_back(arg(i).into());
                }
            }
            out.int(list.len() as i64);
        }
        b"lpop" | b"rpop" => pop(kv, conn, name, input, args, out),
        b"llen" => match lookup!(kv, conn, arg(1)) {
            None => out.int(0),
            Some(Entry {
                value: Value::List(list),
                ..
            }) => out.int(list.len() as i64),
            Some(_) => out.error(WRONGTYPE),
        },
        b"lrange" => {
            let (Some(start), Some(stop)) = (int_arg(input, args, 2), int_arg(input, args, 3))
            else {
                return out.error(NOT_INTEGER);
            };
            match lookup!(kv, conn, arg(1)) {
                None => out.array(0),
                Some(Entry {
                    value: Value::List(list),
                    ..
                }) => {
                    let len = list.len() as i64;
                    let start = if start < 0 {
                        (len + start).max(0)
                    } else {
                        start
                    };
                    let stop = if stop < 0 {
                        len + stop
                    } else {
                        stop.min(len - 1)
                    };
                    if start > stop || start >= len {
                        return out.array(0);
                    }
                    out.array((stop - start + 1) as usize);
                    for item in list.range(start as usize..=stop as usize) {
                        out.bulk(item);
                    }
                }
                Some(_) => out.error(WRONGTYPE),
            }
        }
        b"hset" => {
            if argc % 2 != 0 {
                return out.error("ERR wrong number of arguments for 'hset' command");
            }
            let Some(hash) = collection!(kv, conn, arg(1), Hash) else {
                return out.error(WRONGTYPE);
            };
            let mut added = 0;
            for i in (2..argc).step_by(2) {
                if hash.insert(arg(i).into(), arg(i + 1).into()).is_none() {
                    added += 1;
                }
            }
            out.int(added);
        }
        b"hget" => match lookup!(kv, conn, arg(1)) {
            None => out.null(),
            Some(Entry {
                value: Value::Hash(hash),
                ..
            }) => match hash.get(arg(2)) {
                Some(v) => out.bulk(v),
                None => out.null(),
            },
            Some(_) => out.error(WRONGTYPE),
        },
        b"hdel" => {
            let (removed, empty) = match lookup!(kv, conn, arg(1)) {
                None => return out.int(0),
                Some(Entry {
                    value: Value::Hash(hash),
                    ..
                }) => {
                    let n = (2..argc).filter(|&i| hash.remove(arg(i)).is_some()).count();
                    (n, hash.is_empty())
                }
                Some(_) => return out.error(WRONGTYPE),
            };
            if empty {
                let gone = kv.store.remove(arg(1));
                cancel(conn, gone);
            }
            out.int(removed as i64);
        }
        b"hgetall" => match lookup!(kv, conn, arg(1)) {
            None => out.array(0),
            Some(Entry {
                value: Value::Hash(hash),
                ..
            }) => {
                out.map(hash.len());
                for (field, value) in hash.iter() {
                    out.bulk(field);
                    out.bulk(value);
                }
            }
            Some(_) => out.error(WRONGTYPE),
        },
        b"hlen" => match lookup!(kv, conn, arg(1)) {
            None => out.int(0),
            Some(Entry {
                value: Value::Hash(hash),
                ..
            }) => out.int(hash.len() as i64),
            Some(_) => out.error(WRONGTYPE),
        },
        b"hincrby" => {
            let Some(by) = int_arg(input, args, 3) else {
                return out.error(NOT_INTEGER);
            };
            let Some(hash) = collection!(kv, conn, arg(1), Hash) else {
                return out.error(WRONGTYPE);
            };
            let old = match hash.get(arg(2)) {
                None => 0,
                Some(v) => match parse_int(v) {
                    Some(n) => n,
                    None => return out.error("ERR hash value is not an integer"),
                },
            };
            match old.checked_add(by) {
                Some(new) => {
                    hash.insert(arg(2).into(), new.to_string().into_bytes().into());
                    out.int(new);
                }
                None => out.error("ERR increment or decrement would overflow"),
            }
        }
        b"subscribe" => {
            for i in 1..argc {
                let channel = arg(i);
                if client.subscribe(channel) {
                    kv.channels
                        .entry(channel.into())
                        .or_default()
                        .push(conn.id());
                }
                out.push(3);
                out.bulk(b"subscribe");
                out.bulk(channel);
                out.int(client.subscriptions() as i64);
            }
            // Redis's timeout does not apply to subscribers.
            conn.set_idle_timeout(None);
        }
        b"unsubscribe" => {
            let channels: Vec<Box<[u8]>> = if argc == 1 {
                client.subscribed.clone()
            } else {
                (1..argc).map(|i| arg(i).into()).collect()
            };
            if channels.is_empty() {
                out.push(3);
                out.bulk(b"unsubscribe");
                out.null();
                out.int(0);
            }
            for channel in channels {
                client.unsubscribe(&channel);
                kv.leave(&channel, conn.id());
                out.push(3);
                out.bulk(b"unsubscribe");
                out.bulk(&channel);
                out.int(client.subscriptions() as i64);
            }
            if client.subscriptions() == 0 {
                conn.set_idle_timeout(kv.options.idle_timeout);
            }
        }
        b"publish" => {
            let channel = arg(1);
            let message = arg(2);
            // The message as RESP2 and RESP3 subscribers each read it.
            let mut frames = std::mem::take(&mut kv.frames);
            for (frame, resp3) in frames.iter_mut().zip([false, true]) {
                let mut out = Out {
                    buf: std::mem::take(frame),
                    resp3,
                };
                out.buf.clear();
                out.push(3);
                out.bulk(b"message");
                out.bulk(channel);
                out.bulk(message);
                *frame = out.buf;
            }
            let mut receivers = 0;
            if let Some(subscribers) = kv.channels.get(channel) {
                for &id in subscribers {
                    if id == conn.id() {
                        // Our own replies go after what this request wrote.
                        out.put(&frames[usize::from(client.resp3)]);
                        receivers += 1;
                        continue;
                    }
                    let resp3 = conn.state_of(id).is_some_and(|c| c.resp3);
                    if conn.write_to(id, &frames[usize::from(resp3)]) {
                        receivers += 1;
                    }
                }
            }
            kv.published += 1;
            kv.frames = frames;
            out.int(receivers);
        }
        b"hello" => {
            if argc >= 2 {
                match int_arg(input, args, 1) {
                    Some(2) => client.resp3 = false,
                    Some(3) => client.resp3 = true,
                    Some(_) => return out.error("NOPROTO unsupported protocol version"),
                    None => {
                        return out.error("ERR Protocol version is not an integer or out of range")
                    }
                }
                let mut i = 2;
                while i < argc {
                    if arg(i).eq_ignore_ascii_case(b"setname") && i + 1 < argc {
                        client.name = (!arg(i + 1).is_empty()).then(|| arg(i + 1).into());
                        i += 2;
                    } else {
                        return out.error(&sanitized(format!(
                            "ERR Syntax error in HELLO option '{}'",
                            String::from_utf8_lossy(truncated(arg(i), 128))
                        )));
                    }
                }
            }
            out.resp3 = client.resp3;
            out.map(7);
            out.bulk(b"server");
            out.bulk(b"redis");
            out.bulk(b"version");
            out.bulk(b"7.0.0");
            out.bulk(b"proto");
            out.int(if client.resp3 { 3 } else { 2 });
            out.bulk(b"id");
            out.int(conn.id().serial() as i64);
            out.bulk(b"mode");
            out.bulk(b"standalone");
            out.bulk(b"role");
            out.bulk(b"master");
            out.bulk(b"modules");
            out.array(0);
        }
        b"info" => kv.info(conn, input, args, out),
        b"config" => {
            let sub = arg(1);
            if sub.eq_ignore_ascii_case(b"get") {
                if argc < 3 {
                    return out.error("ERR wrong number of arguments for 'config|get' command");
                }
                // The few settings clients ask about (redis-benchmark reads
                // `save` and `appendonly`): no persistence here.
                let timeout = kv
                    .options
                    .idle_timeout
                    .map_or(0, |t| t.as_secs())
                    .to_string();
                let maxclients = kv.options.max_clients.to_string();
                let table: [(&str, &str); 5] = [
                    ("save", ""),
                    ("appendonly", "no"),
                    ("databases", "1"),
                    ("timeout", &timeout),
                    ("maxclients", &maxclients),
                ];
                let found: Vec<(&str, &str)> = table
                    .iter()
                    .filter(|(name, _)| {
                        (2..argc).any(|i| arg(i).eq_ignore_ascii_case(name.as_bytes()))
                    })
                    .copied()
                    .collect();
                out.map(found.len());
                for (name, value) in found {
                    out.bulk(name.as_bytes());
                    out.bulk(value.as_bytes());
                }
            } else if sub.eq_ignore_ascii_case(b"set") || sub.eq_ignore_ascii_case(b"resetstat") {
                out.ok();
            } else {
                out.error(&sanitized(format!(
                    "ERR unknown subcommand '{}'. Try CONFIG HELP.",
                    String::from_utf8_lossy(truncated(sub, 128))
                )));
            }
        }
        b"client" => {
            let sub = arg(1);
            let wants = |name: &[u8], n: usize| sub.eq_ignore_ascii_case(name).then_some(argc == n);
            let arity_error = |out: &mut Out, name: &str| {
                out.error(&format!(
                    "ERR wrong number of arguments for 'client|{name}' command"
                ))
            };
            if let Some(ok) = wants(b"setname", 3) {
                if !ok {
                    return arity_error(out, "setname");
                }
                if arg(2).iter().any(|&b| b <= b' ' || b > b'~') {
                    return out.error(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                client.name = (!arg(2).is_empty()).then(|| arg(2).into());
                out.ok();
            } else if let Some(ok) = wants(b"getname", 2) {
                if !ok {
                    return arity_error(out, "getname");
                }
                match &client.name {
                    Some(name) => out.bulk(name),
                    None => out.null(),
                }
            } else if let Some(ok) = wants(b"setinfo", 4) {
                if !ok {
                    return arity_error(out, "setinfo");
                }
                out.ok();
            } else if let Some(ok) = wants(b"id", 2) {
                if !ok {
                    return arity_error(out, "id");
                }
                out.int(conn.id().serial() as i64);
            } else {
                out.error(&sanitized(format!(
                    "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                    String::from_utf8_lossy(truncated(sub, 128))
                )));
            }
        }
        b"command" => out.array(0),
        _ => unreachable!("every command with an arity is handled"),
    }
}

fn set(kv: &mut Kv, conn: &mut Conn<'_, Kv>, input: &[u8], args: &Args, out: &mut Out) {
    let arg = |i: usize| args.get(input, i);
    let (mut nx, mut xx, mut keep_ttl, mut get) = (false, false, false, false);
    // The deadline of the last EX or PX, computed as it is validated.
    let mut deadline: Option<Duration> = None;
    // Whether the TTL was given in seconds (EX) or milliseconds (PX).
    let mut unit: Option<bool> = None;
    let mut i = 3;
    while i < args.len() {
        let option = arg(i);
        let has_next = i + 1 < args.len();
        if option.eq_ignore_ascii_case(b"nx") && !xx {
            nx = true;
        } else if option.eq_ignore_ascii_case(b"xx") && !nx {
            xx = true;
        } else if option.eq_ignore_ascii_case(b"get") {
            get = true;
        } else if option.eq_ignore_ascii_case(b"keepttl") && deadline.is_none() {
            keep_ttl = true;
        } else if (option.eq_ignore_ascii_case(b"ex") || option.eq_ignore_ascii_case(b"px"))
            && !keep_ttl
            && has_next
        {
            // EX after EX (or PX after PX) takes the last, as Redis does;
            // EX with PX is a syntax error.
            let seconds = option.eq_ignore_ascii_case(b"ex");
            if unit.is_some_and(|was| was != seconds) {
                return out.error(SYNTAX);
            }
            unit = Some(seconds);
            let Some(n) = parse_int(arg(i + 1)) else {
                return out.error(NOT_INTEGER);
            };
            let ms = if seconds {
                n.checked_mul(1000)
            } else {
                Some(n)
            };
            match ms
                .filter(|&ms| ms > 0)
                .and_then(|ms| deadline_after(kv, ms))
            {
                Some(at) => deadline = Some(at),
                None => return out.error("ERR invalid expire time in 'set' command"),
            }
            i += 1;
        } else {
            return out.error(SYNTAX);
        }
        i += 1;
    }
    let key = arg(1);
    let old = lookup!(kv, conn, key);
    if get {
        match &old {
            None => out.null(),
            Some(Entry {
                value: Value::Str(s),
                ..
            }) => out.bulk(s),
            Some(_) => return out.error(WRONGTYPE),
        }
    }
    let exists = old.is_some();
    if (nx && exists) || (xx && !exists) {
        if !get {
            out.null();
        }
        return;
    }
    let kept = if keep_ttl {
        old.and_then(|entry| entry.ttl.as_deref().copied())
    } else {
        None
    };
    let removed = kv.store.set(key, Value::Str(arg(2).into()));
    match (kept, deadline) {
        (Some(ttl), _) => {
            // KEEPTTL: the same timer goes on.
            let Removed(_) = kv.store.set_ttl(key, ttl);
        }
        (None, Some(at)) => {
            cancel(conn, removed);
            arm(kv, conn, key, at);
        }
        (None, None) => cancel(conn, removed),
    }
    if !get {
        out.ok();
    }
}

fn incr_by(kv: &mut Kv, conn: &mut Conn<'_, Kv>, key: &[u8], by: i64, out: &mut Out) {
    let old = match lookup!(kv, conn, key) {
        None => 0,
        Some(Entry {
            value: Value::Str(s),
            ..
        }) => match parse_int(s) {
            Some(n) => n,
            None => return out.error(NOT_INTEGER),
        },
        Some(_) => return out.error(WRONGTYPE),
    };
    let Some(new) = old.checked_add(by) else {
        return out.error("ERR increment or decrement would overflow");
    };
    let mut digits = Vec::with_capacity(20);
    digits.int(new);
    // ":<n>\r\n" without the colon and CRLF is the number's text.
    let text: Box<[u8]> = digits[1..digits.len() - 2].into();
    match lookup!(kv, conn, key) {
        Some(entry) => entry.value = Value::Str(text),
        None => {
            kv.store.insert(key, Value::Str(text));
        }
    }
    out.int(new);
}

fn expire(
    kv: &mut Kv,
    conn: &mut Conn<'_, Kv>,
    name: &[u8],
    input: &[u8],
    args: &Args,
    out: &mut Out,
) {
    let arg = |i: usize| args.get(input, i);
    let Some(n) = int_arg(input, args, 2) else {
        return out.error(NOT_INTEGER);
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for i in 3..args.len() {
        let option = arg(i);
        if option.eq_ignore_ascii_case(b"nx") {
            nx = true;
        } else if option.eq_ignore_ascii_case(b"xx") {
            xx = true;
        } else if option.eq_ignore_ascii_case(b"gt") {
            gt = true;
        } else if option.eq_ignore_ascii_case(b"lt") {
            lt = true;
        } else {
            return out.error(&sanitized(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(truncated(option, 128))
            )));
        }
    }
    if nx && (xx || gt || lt) {
        return out.error("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return out.error("ERR GT and LT options at the same time are not compatible");
    }
    let ms = if name == b"expire" {
        n.checked_mul(1000)
    } else {
        Some(n)
    };
    let command = if name == b"expire" {
        "expire"
    } else {
        "pexpire"
    };
    let Some(ms) = ms else {
        return out.error(&format!("ERR invalid expire time in '{command}' command"));
    };
    let current = match lookup!(kv, conn, arg(1)) {
        None => return out.int(0),
        Some(entry) => entry.ttl.as_ref().map(|ttl| ttl.at),
    };
    let at = if ms <= 0 {
        Duration::ZERO
    } else {
        match deadline_after(kv, ms) {
            Some(at) => at,
            None => return out.error(&format!("ERR invalid expire time in '{command}' command")),
        }
    };
    let applies = match current {
        None => !xx && !gt,
        Some(current) => !nx && (!gt || at > current) && (!lt || at < current),
    };
    if !applies {
        return out.int(0);
    }
    if ms <= 0 {
        // A deadline already past: the key goes now.
        let removed = kv.store.remove(arg(1));
        cancel(conn, removed);
        kv.store.expired += 1;
    } else {
        arm(kv, conn, arg(1), at);
    }
    out.int(1);
}

fn pop(
    kv: &mut Kv,
    conn: &mut Conn<'_, Kv>,
    name: &[u8],
    input: &[u8],
    args: &Args,
    out: &mut Out,
) {
    let count = match args.len() {
        2 => None,
        3 => match int_arg(input, args, 2) {
            Some(n) if n >= 0 => Some(n as usize),
            _ => return out.error("ERR value is out of range, must be positive"),
        },
        _ => {
            return out.error(&format!(
                "ERR wrong number of arguments for '{}' command",
                String::from_utf8_lossy(name)
            ))
        }
    };
    let key = args.get(input, 1);
    let empty = match lookup!(kv, conn, key) {
        None => {
            return match count {
                None => out.null(),
                Some(_) => out.null_array(),
            };
        }
        Some(Entry {
            value: Value::List(list),
            ..
        }) => {
            let take = |list: &mut VecDeque<Box<[u8]>>| {
                if name == b"lpop" {
                    list.pop_front()
                } else {
                    list.pop_back()
                }
            };
            match count {
                None => match take(list) {
                    Some(item) => out.bulk(&item),
                    None => out.null(),
                },
                Some(n) => {
                    let n = n.min(list.len());
                    out.array(n);
                    for _ in 0..n {
                        if let Some(item) = take(list) {
                            out.bulk(&item);
                        }
                    }
                }
            }
            list.is_empty()
        }
        Some(_) => return out.error(WRONGTYPE),
    };
    if empty {
        let removed = kv.store.remove(key);
        cancel(conn, removed);
    }
}
