//! `resourceVersion`, `resourceVersionMatch` and `continue` on get and list, with Kubernetes'
//! semantics and error messages (the table in "API concepts: resource versions", and
//! apimachinery's `ValidateListOptions` and the etcd3 storage's `GetList`):
//!
//! | request | read |
//! | --- | --- |
//! | `resourceVersion` unset | the most recent state ([`Read::Latest`]) |
//! | `"0"`, or `NotOlderThan` with `"0"` | any state ([`Read::NotOlderThan`]`(0)`) |
//! | `N` (get, or list without `limit`), `NotOlderThan` with `N` | at least as new as `N` |
//! | `N` with `limit` (legacy), `Exact` with `N`, a `continue` token | exactly the state at `N` |
//!
//! A revision newer than the store's is `504 Timeout` ("Too large resource version").
//!
//! Every page of a list shows one state, that of one store revision: the first store page of a
//! request reads the latest state (or, for an exact read, the state at `N` with
//! [`strata_store::Store::list_at`]) and every later one reads at that page's revision, as do
//! the requests that continue it with a token (the token carries the revision). Writes between
//! pages therefore change nothing in the pages, as with etcd's MVCC reads in Kubernetes. Only a
//! revision the store no longer holds (compacted away: by etcd's compaction, or beyond the
//! embedded store's history) is `410 Expired`; for a continue token the `Status` then carries a
//! token to go on at the latest revision (an inconsistent list, which the client must ask for).

use base64::Engine;
use serde_json::{json, Value};

use crate::status::{ApiError, Cause};

/// What state a read must reflect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// The most recent state (a quorum read in etcd terms).
    Latest,
    /// Any state at least as new as this revision (0: any state at all).
    NotOlderThan(u64),
    /// Exactly the state at this revision.
    Exact(u64),
}

const TOKEN_VERSION: &str = "meta.k8s.io/v1";
const EXPIRED: &str = "The resourceVersion for the provided list is too old.";
const INCONSISTENT_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// A resourceVersion as the storage layer parses it ("" and "0" are 0).
pub fn resource_version(rv: &str) -> Result<u64, ApiError> {
    if rv.is_empty() {
        return Ok(0);
    }
    rv.parse::<u64>().map_err(|_| {
        // Go's strconv.ParseUint wording, which Kubernetes passes through.
        let why = if !rv.is_empty() && rv.bytes().all(|b| b.is_ascii_digit()) { "value out of range" } else { "invalid syntax" };
        let quoted = serde_json::to_string(rv).unwrap_or_default();
        ApiError::bad_request(format!("invalid resource version: resourceVersion: Invalid value: {quoted}: strconv.ParseUint: parsing {quoted}: {why}"))
    })
}

/// The read a GET asks for (its `resourceVersion` only: GetOptions has no match).
pub fn get_read(requested: Option<&str>) -> Result<Read, ApiError> {
    match requested.unwrap_or("") {
        "" => Ok(Read::Latest),
        rv => Ok(Read::NotOlderThan(resource_version(rv)?)),
    }
}

/// 504 for a revision the store has not reached.
pub fn too_large(wanted: u64, current: u64) -> ApiError {
    let mut e = ApiError::new(504, "Timeout", format!("Timeout: Too large resource version: {wanted}, current: {current}"));
    e.details = Some(json!({ "causes": [{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }] }));
    e
}

/// Check a read made at store revision `current` against a minimum.
pub fn not_older_than(wanted: u64, current: u64) -> Result<(), ApiError> {
    if wanted > current {
        return Err(too_large(wanted, current));
    }
    Ok(())
}

/// A list request's reading options, validated.
#[derive(Debug)]
pub struct ListOptions {
    pub read: Read,
    /// Where a continued list resumes (exclusive), a full store key.
    pub start_after: Option<String>,
    /// `0`: everything.
    pub limit: usize,
    /// The continue token's start, relative to the prefix (for the token of a 410).
    continued_from: Option<String>,
}

impl ListOptions {
    /// Parse and validate the query of a list of keys under `prefix`, in Kubernetes' order:
    /// the option combinations (422), then the resourceVersion (400), then the continue token
    /// (400).
    pub fn parse(get: impl Fn(&str) -> Option<String>, prefix: &str) -> Result<Self, ApiError> {
        let rv = get("resourceVersion").unwrap_or_default();
        let matching = get("resourceVersionMatch").unwrap_or_default();
        let token = get("continue").unwrap_or_default();
        let limit: usize = match get("limit") {
            Some(l) if !l.is_empty() => l.parse().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
            _ => 0,
        };
        let mut causes = Vec::new();
        let forbidden = |why: &str| Cause::forbidden("resourceVersionMatch", why);
        if !matching.is_empty() {
            if rv.is_empty() {
                causes.push(forbidden("resourceVersionMatch is forbidden unless resourceVersion is provided"));
            }
            if !token.is_empty() {
                causes.push(forbidden("resourceVersionMatch is forbidden when continue is provided"));
            }
            if matching != "Exact" && matching != "NotOlderThan" {
                causes.push(Cause::not_supported("resourceVersionMatch", &Value::from(matching.as_str()), &["Exact", "NotOlderThan", ""]));
            }
            if matching == "Exact" && rv == "0" {
                causes.push(forbidden("resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""));
            }
        }
        if get("sendInitialEvents").is_some() {
            causes.push(Cause::forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"));
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid_kind("meta.k8s.io", "ListOptions", "", causes));
        }
        let n = resource_version(&rv)?;
        if !token.is_empty() {
            let (start, token_rv) = decode_continue(&token).map_err(|e| ApiError::bad_request(format!("invalid continue token: {e}")))?;
            if !rv.is_empty() && rv != "0" {
                return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
            }
            let read = match u64::try_from(token_rv) {
                Ok(at) => Read::Exact(at),
                // -1: the client chose to go on at the latest revision.
                Err(_) => Read::Latest,
            };
            let key = start.strip_suffix('\0').unwrap_or(&start);
            return Ok(Self { read, start_after: Some(format!("{prefix}{key}")), limit, continued_from: Some(start) });
        }
        let read = match (matching.as_str(), rv.as_str()) {
            (_, "") => Read::Latest,
            ("Exact", _) => Read::Exact(n),
            ("", _) if limit > 0 && n > 0 => Read::Exact(n),
            _ => Read::NotOlderThan(n),
        };
        Ok(Self { read, start_after: None, limit, continued_from: None })
    }

    /// The revision a store page of this list is read at, given the revision the request's
    /// earlier pages showed (`pinned`): `None` for the latest state.
    pub fn read_at(&self, pinned: Option<u64>) -> Option<u64> {
        match (self.read, pinned) {
            (Read::Exact(n), _) => Some(n),
            (_, pinned) => pinned,
        }
    }

    /// The revision a list reports, given the revision its first store page showed. Fails when
    /// that state is older than the request allows.
    pub fn snapshot(&self, revision: u64) -> Result<u64, ApiError> {
        if let Read::NotOlderThan(n) = self.read {
            not_older_than(n, revision)?;
        }
        Ok(revision)
    }

    /// The error a store read of this list failed with, as Kubernetes reports it: a revision
    /// compacted away is `410 Expired` (for a continued list, with a token to go on at the
    /// latest revision), one the store has not reached `504`.
    pub fn read_error(&self, e: strata_store::Error) -> ApiError {
        match e {
            strata_store::Error::Compacted { .. } => match &self.continued_from {
                Some(start) => {
                    let mut e = ApiError::expired(INCONSISTENT_CONTINUE);
                    e.metadata = Some(json!({ "continue": encode_token(start, -1) }));
                    e
                }
                None => ApiError::expired(EXPIRED),
            },
            strata_store::Error::FutureRevision { requested, current } => too_large(requested, current),
            other => other.into(),
        }
    }
}

/// What a watch's query asks for: its `resourceVersion` (`None` for "") and
/// `sendInitialEvents` (client-go's streaming lists: the current state as ADDED events, then a
/// bookmark annotated `k8s.io/initial-events-end`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchQuery {
    pub resource_version: Option<u64>,
    pub send_initial_events: Option<bool>,
}

/// A watch's query, checked as upstream's `validateWatchOptions`: `sendInitialEvents` needs
/// `resourceVersionMatch=NotOlderThan`, which a watch takes only with `sendInitialEvents`.
pub fn watch_query(get: impl Fn(&str) -> Option<String>) -> Result<WatchQuery, ApiError> {
    let matching = get("resourceVersionMatch").unwrap_or_default();
    let send_initial_events = match get("sendInitialEvents").as_deref() {
        None => None,
        // strconv.ParseBool's spellings, as the query decoder reads them.
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Some(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Some(false),
        Some(v) => return Err(ApiError::bad_request(format!("sendInitialEvents: invalid value {v:?}: not a boolean"))),
    };
    let forbidden = |why: &str| Cause::forbidden("resourceVersionMatch", why);
    let mut causes = Vec::new();
    if send_initial_events.is_some() && matching != "NotOlderThan" {
        causes.push(forbidden("sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"));
    }
    if !matching.is_empty() {
        if send_initial_events.is_none() {
            causes.push(forbidden("resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
        }
        if matching != "NotOlderThan" {
            causes.push(Cause::not_supported("resourceVersionMatch", &Value::from(matching.as_str()), &["NotOlderThan"]));
        }
        if get("continue").is_some_and(|c| !c.is_empty()) {
            causes.push(forbidden("resourceVersionMatch is forbidden when continue is provided"));
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid_kind("meta.k8s.io", "ListOptions", "", causes));
    }
    let resource_version = match get("resourceVersion").unwrap_or_default().as_str() {
        "" => None,
        v => Some(resource_version(v)?),
    };
    Ok(WatchQuery { resource_version, send_initial_events })
}

fn encode_token(start: &str, rv: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({ "v": TOKEN_VERSION, "rv": rv, "start": start }).to_string())
}

/// The token that continues a list of `prefix` after `last_key`, at revision `rev`, in
/// Kubernetes' format (base64 of `{"v": "meta.k8s.io/v1", "rv": REV, "start": KEY "\0"}`, the
/// key relative to the list's prefix).
pub fn encode_continue(prefix: &str, last_key: &str, rev: u64) -> String {
    let rel = last_key.strip_prefix(prefix).unwrap_or(last_key);
    encode_token(&format!("{rel}\0"), i64::try_from(rev).unwrap_or(i64::MAX))
}

/// (start key relative to the prefix, revision) of a token, with storage's error texts.
fn decode_continue(token: &str) -> Result<(String, i64), String> {
    const INVALID: &str = "continue key is not valid";
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|e| format!("{INVALID}: {e}"))?;
    let v: Value = serde_json::from_slice(&raw).map_err(|e| format!("{INVALID}: {e}"))?;
    match v["v"].as_str() {
        Some(TOKEN_VERSION) => {}
        other => return Err(format!("{INVALID}: server does not recognize this encoded version {}", other.unwrap_or(""))),
    }
    let rv = v["rv"].as_i64().unwrap_or(0);
    if rv == 0 {
        return Err(format!("{INVALID}: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"));
    }
    let start = v["start"].as_str().unwrap_or("");
    if start.is_empty() {
        return Err(format!("{INVALID}: encoded start key empty (version meta.k8s.io/v1)"));
    }
    // Tokens this server issues start just after a key (a trailing NUL) and never climb out of
    // the list's prefix.
    let key = start.strip_suffix('\0').ok_or_else(|| format!("{INVALID}: {start}"))?;
    if key.starts_with('/') || key.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return Err(format!("{INVALID}: {start}"));
    }
    Ok((start.to_string(), rv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(q: &[(&str, &str)]) -> Result<ListOptions, ApiError> {
        let m: HashMap<String, String> = q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ListOptions::parse(|k| m.get(k).cloned(), "/registry/core/configmaps/default/")
    }

    fn read(q: &[(&str, &str)]) -> Read {
        parse(q).expect("valid").read
    }

    #[test]
    fn the_table_of_list_semantics() {
        assert_eq!(read(&[]), Read::Latest);
        assert_eq!(read(&[("resourceVersion", "0")]), Read::NotOlderThan(0));
        assert_eq!(read(&[("resourceVersion", "7")]), Read::NotOlderThan(7));
        assert_eq!(read(&[("resourceVersion", "7"), ("limit", "2")]), Read::Exact(7));
        assert_eq!(read(&[("resourceVersion", "0"), ("limit", "2")]), Read::NotOlderThan(0));
        assert_eq!(read(&[("resourceVersion", "7"), ("resourceVersionMatch", "Exact")]), Read::Exact(7));
        assert_eq!(read(&[("resourceVersion", "7"), ("resourceVersionMatch", "NotOlderThan"), ("limit", "2")]), Read::NotOlderThan(7));
        assert_eq!(read(&[("resourceVersion", "0"), ("resourceVersionMatch", "NotOlderThan")]), Read::NotOlderThan(0));
        assert_eq!(get_read(None).expect("get"), Read::Latest);
        assert_eq!(get_read(Some("9")).expect("get"), Read::NotOlderThan(9));
    }

    #[test]
    fn invalid_combinations_get_kubernetes_errors() {
        let e = parse(&[("resourceVersionMatch", "Exact")]).expect_err("no rv");
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert_eq!(e.message, "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided");
        let e = parse(&[("resourceVersion", "0"), ("resourceVersionMatch", "Exact")]).expect_err("exact 0");
        assert!(e.message.ends_with("resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""), "{}", e.message);
        let e = parse(&[("resourceVersion", "5"), ("resourceVersionMatch", "Newest")]).expect_err("bad match");
        assert!(e.message.ends_with("resourceVersionMatch: Unsupported value: \"Newest\": supported values: \"Exact\", \"NotOlderThan\", \"\""), "{}", e.message);
        let token = encode_continue("/registry/core/configmaps/default/", "/registry/core/configmaps/default/b", 12);
        let e = parse(&[("continue", &token), ("resourceVersionMatch", "Exact")]).expect_err("match and continue");
        assert_eq!(e.message, "ListOptions.meta.k8s.io \"\" is invalid: [resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided, resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided]");
        let e = parse(&[("continue", &token), ("resourceVersion", "12")]).expect_err("rv and continue");
        assert_eq!((e.code, e.message.as_str()), (400, "specifying resource version is not allowed when using continue"));
        let e = parse(&[("resourceVersion", "abc")]).expect_err("rv syntax");
        assert_eq!((e.code, e.message.as_str()), (400, "invalid resource version: resourceVersion: Invalid value: \"abc\": strconv.ParseUint: parsing \"abc\": invalid syntax"));
        let e = parse(&[("continue", "garbage!")]).expect_err("token");
        assert!(e.code == 400 && e.message.starts_with("invalid continue token: continue key is not valid"), "{}", e.message);
        let evil = encode_token("../../secrets/default/x\0", 3);
        assert!(parse(&[("continue", &evil)]).is_err(), "a token may not leave its prefix");
        assert!(parse(&[("continue", &encode_token("b\0", 0))]).expect_err("rv 0").message.contains("incorrect encoded start resourceVersion"));
    }

    #[test]
    fn continue_tokens_pin_a_revision() {
        let prefix = "/registry/core/configmaps/default/";
        let token = encode_continue(prefix, &format!("{prefix}b"), 12);
        let o = parse(&[("continue", &token), ("resourceVersion", "0"), ("limit", "5")]).expect("continue");
        assert_eq!((o.read, o.start_after.as_deref(), o.limit), (Read::Exact(12), Some("/registry/core/configmaps/default/b"), 5));
        assert_eq!((o.read_at(None), o.read_at(Some(12))), (Some(12), Some(12)), "every page at the token's revision");
        assert_eq!(o.snapshot(12).expect("same revision"), 12);
        // Compacted away: 410 with a token for the rest at the latest revision.
        let e = o.read_error(strata_store::Error::Compacted { requested: 12, compacted: 20 });
        assert_eq!((e.code, e.reason), (410, "Expired"));
        assert!(e.message.starts_with("The provided continue parameter is too old"));
        let next = e.metadata.as_ref().and_then(|m| m["continue"].as_str()).expect("token").to_string();
        let o = parse(&[("continue", &next)]).expect("inconsistent continue");
        assert_eq!((o.read, o.start_after.as_deref()), (Read::Latest, Some("/registry/core/configmaps/default/b")));
        assert_eq!((o.read_at(None), o.read_at(Some(30))), (None, Some(30)), "the latest, then pinned");

        let exact = parse(&[("resourceVersion", "20"), ("resourceVersionMatch", "Exact")]).expect("exact");
        assert_eq!(exact.read_at(None), Some(20));
        let e = exact.read_error(strata_store::Error::FutureRevision { requested: 20, current: 13 });
        assert_eq!((e.code, e.reason, e.message.as_str()), (504, "Timeout", "Timeout: Too large resource version: 20, current: 13"));
        let e = parse(&[("resourceVersion", "9"), ("resourceVersionMatch", "Exact")]).expect("exact").read_error(strata_store::Error::Compacted { requested: 9, compacted: 11 });
        assert_eq!((e.code, e.message.as_str(), e.metadata.is_none()), (410, EXPIRED, true));
        let e = exact.read_error(strata_store::Error::Unavailable("down".into()));
        assert_eq!(e.code, 503);

        let not_older = parse(&[("resourceVersion", "9")]).expect("not older");
        assert_eq!((not_older.read_at(None), not_older.snapshot(13).expect("newer is fine")), (None, 13));
        let e = not_older.snapshot(8).expect_err("older");
        assert_eq!((e.code, e.reason), (504, "Timeout"));
        let latest = parse(&[]).expect("latest");
        assert_eq!((latest.read_at(None), latest.read_at(Some(13))), (None, Some(13)), "later store pages of one request stay at its first");
    }
}
