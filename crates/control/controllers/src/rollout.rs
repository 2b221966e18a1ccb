//! The arithmetic of a Deployment's rollout (upstream's `deploymentutil`), pure and unit-tested:
//! maxSurge/maxUnavailable fenceposts, how far the new ReplicaSet may grow, how far old ones may
//! shrink, and the pod-template-hash.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// An int-or-percent against `total`: percentages round up (`round_up`) or down.
pub fn scaled_value(v: Option<&IntOrString>, total: i32, round_up: bool, default: &str) -> Result<i32, String> {
    let s = match v {
        Some(IntOrString::Int(i)) => return Ok(*i),
        Some(IntOrString::String(s)) => s.clone(),
        None => default.to_string(),
    };
    let Some(p) = s.strip_suffix('%') else {
        return s.parse::<i32>().map_err(|_| format!("invalid value for IntOrString: invalid type: string is not a percentage: {s:?}"));
    };
    let p: i64 = p.parse().map_err(|_| format!("invalid value for IntOrString: invalid value {s:?}"))?;
    let x = p * i64::from(total);
    Ok(if round_up { (x + 99).div_euclid(100) } else { x.div_euclid(100) } as i32)
}

/// (maxSurge, maxUnavailable) for `desired` replicas: surge rounded up, unavailable down; both
/// zero would never progress, so unavailable becomes 1 then (upstream's `ResolveFenceposts`).
pub fn fenceposts(max_surge: Option<&IntOrString>, max_unavailable: Option<&IntOrString>, desired: i32) -> Result<(i32, i32), String> {
    let surge = scaled_value(max_surge, desired, true, "25%")?;
    let unavailable = scaled_value(max_unavailable, desired, false, "25%")?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

/// The new ReplicaSet's replicas for a rolling update: grow it as far as the surge allows
/// (`all` is the sum of every ReplicaSet's spec.replicas, the new one's included).
pub fn new_rs_replicas(desired: i32, max_surge: i32, all: i32, new_current: i32) -> i32 {
    let max_total = desired + max_surge;
    if all >= max_total {
        return new_current;
    }
    let up = (max_total - all).min(desired - new_current).max(0);
    new_current + up
}

/// How many old pods may go now: everything above the minimum available, minus the new
/// ReplicaSet's pods that are not available yet (upstream's `maxScaledDown`).
pub fn max_scaled_down(desired: i32, max_unavailable: i32, all: i32, new_spec: i32, new_available: i32) -> i32 {
    let min_available = desired - max_unavailable;
    let new_unavailable = new_spec - new_available;
    all - min_available - new_unavailable
}

/// Old pods that may be scaled down among the available ones, keeping `desired -
/// max_unavailable` available in total.
pub fn available_scale_down(desired: i32, max_unavailable: i32, all_available: i32) -> i32 {
    (all_available - (desired - max_unavailable)).max(0)
}

/// The `pod-template-hash` label: FNV-1a (32 bit) of the template's canonical JSON and the
/// collision count, in the alphabet that never spells words (upstream's `SafeEncodeString`).
pub fn template_hash(template_json: &str, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |b: &[u8]| {
        for x in b {
            h ^= u32::from(*x);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(template_json.as_bytes());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    safe_encode(&h.to_string())
}

/// Map each character onto `bcdfghjklmnpqrstvwxz2456789` (upstream's `rand.SafeEncodeString`).
pub fn safe_encode(s: &str) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes().map(|b| ALPHA[usize::from(b) % ALPHA.len()] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> IntOrString {
        IntOrString::String(v.into())
    }

    #[test]
    fn fenceposts_round_as_upstream() {
        assert_eq!(fenceposts(None, None, 3), Ok((1, 0)), "25% of 3: surge rounds up, unavailable down");
        assert_eq!(fenceposts(None, None, 10), Ok((3, 2)));
        assert_eq!(fenceposts(Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0)), 5), Ok((0, 1)));
        assert_eq!(fenceposts(Some(&s("50%")), Some(&IntOrString::Int(2)), 5), Ok((3, 2)));
        assert!(fenceposts(Some(&s("x%")), None, 5).is_err());
    }

    #[test]
    fn rolling_update_steps() {
        // 3 replicas, surge 1, unavailable 0: new grows one at a time.
        assert_eq!(new_rs_replicas(3, 1, 3, 0), 1);
        assert_eq!(new_rs_replicas(3, 1, 4, 1), 1, "at the surge limit");
        // old 3, new 1 not available: nothing may go.
        assert_eq!(max_scaled_down(3, 0, 4, 1, 0), 0);
        // new 1 available: one old may go.
        assert_eq!(max_scaled_down(3, 0, 4, 1, 1), 1);
        assert_eq!(available_scale_down(3, 0, 4), 1);
        // never above desired even with a large surge
        assert_eq!(new_rs_replicas(3, 10, 3, 0), 3);
        assert_eq!(new_rs_replicas(3, 1, 3, 3), 3);
    }

    #[test]
    fn hash_is_stable_and_safe() {
        let a = template_hash("{\"a\":1}", None);
        assert_eq!(a, template_hash("{\"a\":1}", None));
        assert_ne!(a, template_hash("{\"a\":1}", Some(1)), "a collision count gives another hash");
        assert_ne!(a, template_hash("{\"a\":2}", None));
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
