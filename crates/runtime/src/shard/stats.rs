//! One snapshot for all shards: each shard's own ([`crate::control::snapshot_json`]),
//! and their total, for `ustack stats` and `ustack top`.

use serde_json::{json, Value};

/// The snapshot of a sharded stack: the total of every shard's snapshot at
/// the top level (so every reader of a one-stack snapshot reads the total
/// unchanged), `sharding` with the shard count and the handoff counters
/// summed, and `shards`, each shard's own snapshot with its `shard` index
/// and `core`. Numbers add up, except `uptime_us` (the largest); strings
/// are the first shard's.
pub fn merge(shards: &[Value], cores: &[usize]) -> Value {
    let mut total = shards.first().cloned().unwrap_or_else(|| json!({}));
    for s in shards.iter().skip(1) {
        add(&mut total, s, "");
    }
    let counter = |name: &str| -> u64 {
        shards.iter().filter_map(|s| s["interfaces"][0]["device_counters"][name].as_u64()).sum()
    };
    let per_shard: Vec<Value> = shards
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let mut s = s.clone();
            if let Some(o) = s.as_object_mut() {
                o.insert("shard".into(), Value::from(k));
                o.insert("core".into(), cores.get(k).map_or(Value::Null, |&c| Value::from(c)));
            }
            s
        })
        .collect();
    if let Some(o) = total.as_object_mut() {
        o.insert(
            "sharding".into(),
            json!({
                "shards": shards.len(),
                "handoffs": counter("shard_handoffs"),
                "handoff_drops": counter("shard_handoff_drops"),
                "arp_copies": counter("shard_arp_copies"),
                "moves": counter("shard_moves_in"),
                "moves_refused": counter("shard_moves_refused"),
                "moves_lost": counter("shard_moves_lost"),
                "moves_steered": counter("shard_moves_steered"),
            }),
        );
        o.insert("shards".into(), Value::Array(per_shard));
    }
    total
}

fn add(into: &mut Value, from: &Value, key: &str) {
    match (into, from) {
        (Value::Number(a), Value::Number(b)) => {
            let sum = match (a.as_u64(), b.as_u64()) {
                (Some(x), Some(y)) if key == "uptime_us" => Value::from(x.max(y)),
                (Some(x), Some(y)) => Value::from(x.saturating_add(y)),
                _ => Value::from(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0)),
            };
            *a = match sum {
                Value::Number(n) => n,
                _ => unreachable!("a sum is a number"),
            };
        }
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(slot) => add(slot, v, k),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, v) in b.iter().enumerate() {
                match a.get_mut(i) {
                    Some(slot) => add(slot, v, key),
                    None => a.push(v.clone()),
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_and_shards_keep_their_own() {
        let a = json!({"device": "tap:x", "uptime_us": 5, "counters": {"rx_frames": 3},
            "interfaces": [{"name": "tap:x", "device_counters": {"shard_handoffs": 1}}]});
        let b = json!({"device": "tap:x", "uptime_us": 7, "counters": {"rx_frames": 4, "new": 1},
            "interfaces": [{"name": "tap:x", "device_counters": {"shard_handoffs": 2}}]});
        let m = merge(&[a, b], &[0, 1]);
        assert_eq!(m["uptime_us"], 7);
        assert_eq!(m["device"], "tap:x");
        assert_eq!(m["counters"]["rx_frames"], 7);
        assert_eq!(m["counters"]["new"], 1);
        assert_eq!(m["interfaces"][0]["device_counters"]["shard_handoffs"], 3);
        assert_eq!(m["sharding"]["handoffs"], 3);
        assert_eq!(m["shards"][1]["counters"]["rx_frames"], 4);
        assert_eq!((m["shards"][1]["shard"].as_u64(), m["shards"][1]["core"].as_u64()), (Some(1), Some(1)));
    }
}
