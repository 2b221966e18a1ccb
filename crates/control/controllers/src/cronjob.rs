//! The CronJob controller (upstream's cronjob controller v2): a Job per scheduled time, named
//! `<cronjob>-<scheduled minutes since the epoch>` (so a time is never started twice), with the
//! CronJob as its controller; `concurrencyPolicy` (Allow, Forbid: skip while one runs, Replace:
//! delete the running ones first), `suspend`, `startingDeadlineSeconds`, the history limits,
//! `status.active`/`lastScheduleTime`/`lastSuccessfulTime`, and Events with upstream's reasons.
//!
//! Level-triggered: each reconcile works out, from the CronJob's status and the clock, the most
//! recent unmet schedule time (only the most recent of several missed ones runs; more than 100
//! missed is a `TooManyMissedTimes` warning, as upstream) and asks to be woken 100 ms after the
//! next one — no polling. The decision is a pure function of (CronJob, now) ([`plan`]); the
//! reconcile then carries it out. Schedules are `strata_cron` (robfig/cron's grammar), in the
//! CronJob's `spec.timeZone`, else a `TZ=` prefix, else the controller's local zone.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use strata_client::lean;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt};
use kube::ResourceExt;
use strata_client::events::EventType;
use strata_cron::{Schedule, Zone};

use crate::replicaset::{controller_of, controller_ref};
use crate::{Clients, Context, Error};

pub const IDENTITY: &str = "cronjob-controller";
/// The scheduled time of a Job, on the CronJob's time zone (upstream's CronJobsScheduledAnnotation).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Padding after a scheduled time before waking up (upstream's `nextScheduleDelta`).
const DELTA: Duration = Duration::from_millis(100);

pub struct State {
    jobs: Store<Job>,
    /// The clock (injectable for tests).
    now: fn() -> DateTime<Utc>,
    /// The zone of schedules without `timeZone` (kube-controller-manager's local zone).
    local: Zone,
}

pub async fn run(clients: Clients) -> Result<(), Error> {
    let (jobs, writer) = reflector::store::<Job>();
    let job_stream = reflector::reflector(writer, lean::watcher(Api::<Job>::all(clients.root.clone()), crate::watch_config())).default_backoff().touched_objects();
    let ctx = Context::new(clients.clone(), IDENTITY, State { jobs, now: Utc::now, local: Zone::local() });
    Controller::new(Api::<CronJob>::all(clients.root.clone()), crate::watch_config())
        .owns_stream(job_stream)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_failures(IDENTITY))
        .await;
    Ok(())
}

fn error_policy(cj: Arc<CronJob>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(cronjob = %crate::key(cj.as_ref()), error = %e, "cronjob controller");
    Action::requeue(Duration::from_secs(2))
}

/// How many schedule times passed unmet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    /// More than 100.
    Many,
}

/// Upstream's `mostRecentScheduleTime`: the earliest time considered (last schedule, else
/// creation; with `include_deadline`, no earlier than now - startingDeadlineSeconds), the most
/// recent schedule time at or before `now` after it, and how many were missed. An error for a
/// schedule that never fires or fires less than a second apart.
pub fn most_recent_schedule_time(cj: &CronJob, now: DateTime<Utc>, sched: &Schedule, zone: &Zone, include_deadline: bool) -> Result<(DateTime<Utc>, Option<DateTime<Utc>>, Missed), String> {
    let created = cj.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let mut earliest = cj.status.as_ref().and_then(|s| s.last_schedule_time.as_ref()).map(|t| t.0).unwrap_or(created);
    if include_deadline {
        if let Some(d) = cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds) {
            let deadline = now - chrono::Duration::seconds(d);
            if deadline > earliest {
                earliest = deadline;
            }
        }
    }
    let never = || "time difference between two schedules is less than 1 second".to_string();
    let t1 = sched.next(earliest, zone).ok_or_else(never)?;
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let Some(t2) = sched.next(t1, zone) else { return Ok((earliest, Some(t1), Missed::None)) };
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let between = ((t2 - t1).num_milliseconds() + 500) / 1000;
    if between < 1 {
        return Err(never());
    }
    // A rough count of the periods that fit between t1 and now; then the exact most recent time,
    // searched from one period before the estimate (irregular schedules).
    let missed = (now - t1).num_seconds() / between + 1;
    let mut t = sched.next(t1 + chrono::Duration::seconds((missed - 2) * between), zone);
    let mut recent = None;
    while let Some(x) = t.filter(|x| *x <= now) {
        recent = Some(x);
        t = sched.next(x, zone);
    }
    let m = if missed > 100 { Missed::Many } else if missed > 0 { Missed::Few } else { Missed::None };
    Ok((earliest, recent, m))
}

/// How long until 100 ms after the next schedule time (upstream's `nextScheduleTimeDuration`).
pub fn next_schedule_time_duration(cj: &CronJob, now: DateTime<Utc>, sched: &Schedule, zone: &Zone) -> Option<Duration> {
    let base = match most_recent_schedule_time(cj, now, sched, zone, false) {
        Err(_) => now,
        Ok((_, Some(recent), _)) => recent,
        Ok((earliest, None, Missed::None)) => earliest,
        Ok((_, None, _)) => now,
    };
    let next = sched.next(base, zone)?;
    Some((next - now).to_std().unwrap_or(Duration::ZERO) + DELTA)
}

/// The Job name for a scheduled time: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cj: &CronJob, scheduled: DateTime<Utc>) -> String {
    format!("{}-{}", cj.name_any(), scheduled.timestamp().div_euclid(60))
}

/// The schedule as upstream's `formatSchedule` hands it to the parser: a `TZ=` prefix in the
/// schedule is used as is; otherwise `spec.timeZone` (when it loads) becomes one.
fn format_schedule(cj: &CronJob) -> String {
    let spec = cj.spec.clone().unwrap_or_default();
    if spec.schedule.contains("TZ") {
        return spec.schedule;
    }
    match spec.time_zone {
        Some(tz) if Zone::load(&tz).is_ok() => format!("TZ={tz} {}", spec.schedule),
        _ => spec.schedule,
    }
}

/// What to do about a CronJob now.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// `deletionTimestamp` set: status only.
    Deleting,
    UnknownTimeZone(String),
    Suspended,
    Unparseable(String),
    Invalid(String),
    /// Nothing due.
    Wait,
    /// The most recent time is past its startingDeadlineSeconds.
    TooLate(DateTime<Utc>),
    /// Its Job exists already (by name in `active`, or it is `lastScheduleTime`).
    AlreadyProcessed,
    /// Forbid, and a Job is active.
    Forbidden,
    /// Create the Job for `scheduled`; with `replace`, delete the active ones first.
    Start { scheduled: DateTime<Utc>, replace: bool },
}

#[derive(Debug)]
pub struct Plan {
    pub decision: Decision,
    /// More than 100 schedule times were missed.
    pub many_missed: bool,
    /// The schedule carries `TZ=`/`CRON_TZ=` (accepted, not supported: a warning).
    pub tz_in_schedule: bool,
    /// When to look again (None: only on a change).
    pub requeue: Option<Duration>,
}

/// Decide, from the CronJob (its status already reconciled with its Jobs) and the clock alone.
pub fn plan(cj: &CronJob, now: DateTime<Utc>, local: &Zone) -> Plan {
    let spec = cj.spec.clone().unwrap_or_default();
    let st = cj.status.clone().unwrap_or_default();
    let mut p = Plan { decision: Decision::Wait, many_missed: false, tz_in_schedule: false, requeue: None };
    let done = |mut p: Plan, d: Decision| {
        p.decision = d;
        p
    };
    if cj.metadata.deletion_timestamp.is_some() {
        return done(p, Decision::Deleting);
    }
    if let Some(tz) = spec.time_zone.as_deref() {
        if let Err(e) = Zone::load(tz) {
            return done(p, Decision::UnknownTimeZone(format!("invalid timeZone: {tz:?}: {e}")));
        }
    }
    if spec.suspend == Some(true) {
        return done(p, Decision::Suspended);
    }
    p.tz_in_schedule = spec.schedule.contains("TZ");
    let sched = match strata_cron::parse_standard(&format_schedule(cj)) {
        Ok(s) => s,
        Err(e) => return done(p, Decision::Unparseable(format!("unparseable schedule: {:?} : {e}", spec.schedule))),
    };
    let zone = sched.zone().cloned().unwrap_or_else(|| local.clone());
    let scheduled = match most_recent_schedule_time(cj, now, &sched, &zone, true) {
        Err(e) => return done(p, Decision::Invalid(format!("invalid schedule: {} : {e}", spec.schedule))),
        Ok((_, recent, missed)) => {
            p.many_missed = missed == Missed::Many && recent.is_some();
            recent.filter(|t| *t <= now)
        }
    };
    p.requeue = next_schedule_time_duration(cj, now, &sched, &zone);
    let Some(scheduled) = scheduled else { return done(p, Decision::Wait) };
    if spec.starting_deadline_seconds.is_some_and(|d| scheduled + chrono::Duration::seconds(d) < now) {
        return done(p, Decision::TooLate(scheduled));
    }
    let name = job_name(cj, scheduled);
    let active = st.active.unwrap_or_default();
    let ns = cj.namespace();
    if active.iter().any(|r| r.name.as_deref() == Some(name.as_str()) && r.namespace == ns) || st.last_schedule_time.as_ref().is_some_and(|t| t.0 == scheduled) {
        return done(p, Decision::AlreadyProcessed);
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => done(p, Decision::Forbidden),
        Some("Replace") => done(p, Decision::Start { scheduled, replace: !active.is_empty() }),
        _ => done(p, Decision::Start { scheduled, replace: false }),
    }
}

/// The Job for a scheduled time: the template's labels, annotations and spec, the scheduled
/// time annotation (on `spec.timeZone`, else UTC, as upstream), the CronJob as controller.
pub fn job_for(cj: &CronJob, scheduled: DateTime<Utc>) -> Job {
    let template = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    let zone = cj.spec.as_ref().and_then(|s| s.time_zone.as_deref()).and_then(|tz| Zone::load(tz).ok()).unwrap_or_else(Zone::utc);
    annotations.insert(SCHEDULED_TIMESTAMP.into(), strata_cron::rfc3339_in(scheduled, &zone));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj, scheduled)),
            namespace: cj.namespace(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn finished(j: &Job) -> Option<&'static str> {
    let conds = j.status.as_ref()?.conditions.as_ref()?;
    conds.iter().find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed")).map(|c| if c.type_ == "Complete" { "Complete" } else { "Failed" })
}

/// The finished Jobs beyond a history limit, oldest first (by startTime, unstarted last, then
/// by name, as upstream's `byJobStartTime`).
pub fn beyond_limit(mut jobs: Vec<Arc<Job>>, limit: i32) -> Vec<Arc<Job>> {
    let extra = jobs.len().saturating_sub(limit.max(0) as usize);
    jobs.sort_by(|a, b| {
        let (sa, sb) = (a.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0), b.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0));
        match (sa, sb) {
            (Some(x), Some(y)) if x != y => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            _ => a.name_any().cmp(&b.name_any()),
        }
    });
    jobs.truncate(extra);
    jobs
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        ..Default::default()
    }
}

fn in_active(st: &CronJobStatus, uid: &str) -> bool {
    st.active.iter().flatten().any(|r| r.uid.as_deref() == Some(uid))
}

fn remove_active(st: &mut CronJobStatus, uid: &str) {
    if let Some(a) = st.active.as_mut() {
        a.retain(|r| r.uid.as_deref() != Some(uid));
    }
}

/// Delete a Job (its pods in the background, as upstream) and drop it from `active`.
async fn delete_job(ctx: &Context<State>, cj: &CronJob, st: &mut CronJobStatus, ns: &str, name: &str, uid: &str) -> bool {
    let api: Api<Job> = Api::namespaced(ctx.writer.clone(), ns);
    let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    match api.delete(name, &dp).await {
        Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {
            remove_active(st, uid);
            ctx.recorder.publish(cj, EventType::Normal, "SuccessfulDelete", format!("Deleted job {name}"));
            true
        }
        Err(e) => {
            ctx.recorder.publish(cj, EventType::Warning, "FailedDelete", format!("Deleted job: {}", crate::api_message(&e)));
            false
        }
    }
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    if !crate::synced(&ctx.state.jobs) {
        return Ok(crate::not_synced());
    }
    let now = (ctx.state.now)();
    let ns = cj.namespace().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let api: Api<CronJob> = Api::namespaced(ctx.writer.clone(), &ns);
    let jobs_api: Api<Job> = Api::namespaced(ctx.writer.clone(), &ns);
    let jobs: Vec<Arc<Job>> = ctx.state.jobs.state().into_iter().filter(|j| j.namespace().as_deref() == Some(ns.as_str()) && controller_of(&j.metadata).is_some_and(|o| o.kind == "CronJob" && o.uid == uid)).collect();
    let mut cj = (*cj).clone();
    let mut st = cj.status.clone().unwrap_or_default();
    let mut update = false;

    // History limits: the oldest finished Jobs beyond them go.
    let spec = cj.spec.clone().unwrap_or_default();
    for (kind, limit) in [("Complete", spec.successful_jobs_history_limit), ("Failed", spec.failed_jobs_history_limit)] {
        let Some(limit) = limit else { continue };
        let done: Vec<Arc<Job>> = jobs.iter().filter(|j| finished(j) == Some(kind)).cloned().collect();
        for j in beyond_limit(done, limit) {
            update |= delete_job(&ctx, &cj, &mut st, &ns, &j.name_any(), j.metadata.uid.as_deref().unwrap_or("")).await;
        }
    }

    // The active list against the Jobs.
    for j in &jobs {
        let juid = j.metadata.uid.clone().unwrap_or_default();
        let found = in_active(&st, &juid);
        if !found && finished(j).is_none() {
            // Perhaps our own status update has not reached the cache yet: ask the server.
            let fresh = api.get(&cj.name_any()).await?;
            if fresh.status.as_ref().is_some_and(|s| in_active(s, &juid)) {
                st = fresh.status.clone().unwrap_or_default();
                cj = fresh;
                continue;
            }
            ctx.recorder.publish(&cj, EventType::Warning, "UnexpectedJob", format!("Saw a job that the controller did not create or forgot: {}", j.name_any()));
        } else if found && finished(j).is_some() {
            remove_active(&mut st, &juid);
            ctx.recorder.publish(&cj, EventType::Normal, "SawCompletedJob", format!("Saw completed job: {}, status: {}", j.name_any(), finished(j).unwrap_or("")));
            update = true;
        } else if finished(j) == Some("Complete") {
            let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
            if let Some(t) = done {
                if st.last_successful_time.as_ref().is_none_or(|l| t.0 > l.0) {
                    st.last_successful_time = Some(t);
                    update = true;
                }
            }
        }
    }
    for r in st.active.clone().unwrap_or_default() {
        let ruid = r.uid.clone().unwrap_or_default();
        if jobs.iter().any(|j| j.metadata.uid.as_deref() == Some(ruid.as_str())) {
            continue;
        }
        // Not in the cache: gone only if the server says so.
        let name = r.name.clone().unwrap_or_default();
        if jobs_api.get_opt(&name).await?.is_none_or(|j| j.metadata.uid.as_deref() != Some(ruid.as_str())) {
            ctx.recorder.publish(&cj, EventType::Normal, "MissingJob", format!("Active job went missing: {name}"));
            remove_active(&mut st, &ruid);
            update = true;
        }
    }

    let mut probe = cj.clone();
    probe.status = Some(st.clone());
    let p = plan(&probe, now, &ctx.state.local);
    if p.tz_in_schedule {
        ctx.recorder.publish(&cj, EventType::Warning, "UnsupportedSchedule", format!("CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details", spec.schedule));
    }
    if p.many_missed {
        ctx.recorder.publish(&cj, EventType::Warning, "TooManyMissedTimes", "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew");
    }
    let requeue = p.requeue;
    match p.decision {
        Decision::Deleting | Decision::Suspended | Decision::Wait | Decision::AlreadyProcessed => {}
        Decision::UnknownTimeZone(m) => ctx.recorder.publish(&cj, EventType::Warning, "UnknownTimeZone", m),
        Decision::Unparseable(m) => ctx.recorder.publish(&cj, EventType::Warning, "UnparseableSchedule", m),
        Decision::Invalid(m) => ctx.recorder.publish(&cj, EventType::Warning, "InvalidSchedule", m),
        Decision::TooLate(t) => ctx.recorder.publish(&cj, EventType::Warning, "MissSchedule", format!("Missed scheduled time to start a job: {}", t.format("%a, %d %b %Y %H:%M:%S %z"))),
        Decision::Forbidden => ctx.recorder.publish(&cj, EventType::Normal, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid"),
        Decision::Start { scheduled, replace } => {
            if replace {
                for r in st.active.clone().unwrap_or_default() {
                    let name = r.name.clone().unwrap_or_default();
                    if let Err(e) = jobs_api.get(&name).await {
                        ctx.recorder.publish(&cj, EventType::Warning, "FailedGet", format!("Get job: {}", crate::api_message(&e)));
                        return Err(e.into());
                    }
                    if !delete_job(&ctx, &cj, &mut st, &ns, &name, r.uid.as_deref().unwrap_or("")).await {
                        return Err(Error::Invalid(format!("could not replace job {ns}/{name}")));
                    }
                    update = true;
                }
            }
            let job = job_for(&cj, scheduled);
            let name = job.name_any();
            let created = match jobs_api.create(&PostParams::default(), &job).await {
                Ok(j) => {
                    ctx.recorder.publish(&cj, EventType::Normal, "SuccessfulCreate", format!("Created job {name}"));
                    Some(j)
                }
                Err(kube::Error::Api(e)) if e.code == 409 && e.reason == "AlreadyExists" => {
                    // Created before, perhaps by us just before a crash: adopt it into `active`
                    // if it is ours and not there yet.
                    let j = jobs_api.get(&name).await?;
                    let ours = controller_of(&j.metadata).is_some_and(|o| o.uid == uid);
                    (ours && !in_active(&st, j.metadata.uid.as_deref().unwrap_or(""))).then_some(j)
                }
                Err(e) => {
                    ctx.recorder.publish(&cj, EventType::Warning, "FailedCreate", format!("Error creating job: {}", crate::api_message(&e)));
                    return Err(e.into());
                }
            };
            if let Some(j) = created {
                st.active.get_or_insert_with(Vec::new).push(job_ref(&j));
                st.last_schedule_time = Some(Time(scheduled));
                update = true;
            }
        }
    }
    if update && cj.status.as_ref() != Some(&st) {
        let mut body = cj.clone();
        body.status = Some(st);
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::Invalid(e.to_string()))?;
        match api.replace_status(&cj.name_any(), &PostParams::default(), bytes).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => return Err(Error::Invalid("cronjob changed; retrying".into())),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, JobCondition, JobStatus};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    fn cronjob(schedule: &str, created: &str, last: Option<&str>) -> CronJob {
        CronJob {
            metadata: ObjectMeta { name: Some("tick".into()), namespace: Some("ns".into()), uid: Some("u1".into()), creation_timestamp: Some(Time(at(created))), ..Default::default() },
            spec: Some(CronJobSpec { schedule: schedule.into(), concurrency_policy: Some("Allow".into()), suspend: Some(false), ..Default::default() }),
            status: Some(CronJobStatus { last_schedule_time: last.map(|l| Time(at(l))), ..Default::default() }),
        }
    }

    fn active(cj: &mut CronJob, name: &str) {
        let st = cj.status.get_or_insert_with(Default::default);
        st.active.get_or_insert_with(Vec::new).push(ObjectReference { name: Some(name.into()), namespace: Some("ns".into()), uid: Some(format!("uid-{name}")), ..Default::default() });
    }

    #[test]
    fn most_recent_time_missed_counts_and_deadline() {
        let utc = Zone::utc();
        let every = strata_cron::parse_standard("*/1 * * * *").expect("schedule");
        let cj = cronjob("*/1 * * * *", "2026-11-29T10:00:30Z", None);
        // Before the first time: nothing.
        assert_eq!(most_recent_schedule_time(&cj, at("2026-11-29T10:00:50Z"), &every, &utc, true), Ok((at("2026-11-29T10:00:30Z"), None, Missed::None)));
        // Just after it: that time, none missed.
        assert_eq!(most_recent_schedule_time(&cj, at("2026-11-29T10:01:10Z"), &every, &utc, true), Ok((at("2026-11-29T10:00:30Z"), Some(at("2026-11-29T10:01:00Z")), Missed::None)));
        // Several minutes later: the most recent only, a few missed.
        assert_eq!(most_recent_schedule_time(&cj, at("2026-11-29T10:05:10Z"), &every, &utc, true), Ok((at("2026-11-29T10:00:30Z"), Some(at("2026-11-29T10:05:00Z")), Missed::Few)));
        // Three hours later: more than 100 missed, still the most recent one.
        let (_, recent, missed) = most_recent_schedule_time(&cj, at("2026-11-29T13:00:30Z"), &every, &utc, true).expect("ok");
        assert_eq!((recent, missed), (Some(at("2026-11-29T13:00:00Z")), Missed::Many));
        // startingDeadlineSeconds: nothing earlier than now - 30 s is considered.
        let mut late = cronjob("*/1 * * * *", "2026-11-29T10:00:30Z", Some("2026-11-29T10:00:00Z"));
        late.spec.as_mut().expect("spec").starting_deadline_seconds = Some(30);
        assert_eq!(most_recent_schedule_time(&late, at("2026-11-29T10:05:40Z"), &every, &utc, true).expect("ok").1, None);
        assert_eq!(most_recent_schedule_time(&late, at("2026-11-29T10:05:20Z"), &every, &utc, true).expect("ok").1, Some(at("2026-11-29T10:05:00Z")));
        // A schedule that never fires.
        let never = strata_cron::parse_standard("0 0 30 2 *").expect("schedule");
        assert!(most_recent_schedule_time(&cj, at("2026-11-29T10:05:10Z"), &never, &utc, true).is_err());
    }

    #[test]
    fn requeues_just_after_the_next_time() {
        let utc = Zone::utc();
        let every = strata_cron::parse_standard("*/1 * * * *").expect("schedule");
        let cj = cronjob("*/1 * * * *", "2026-11-29T10:00:30Z", None);
        assert_eq!(next_schedule_time_duration(&cj, at("2026-11-29T10:00:50Z"), &every, &utc), Some(Duration::from_millis(10_100)));
        let hourly = strata_cron::parse_standard("@hourly").expect("schedule");
        let cj = cronjob("@hourly", "2026-11-29T10:00:30Z", Some("2026-11-29T10:00:00Z"));
        assert_eq!(next_schedule_time_duration(&cj, at("2026-11-29T10:59:00Z"), &hourly, &utc), Some(Duration::from_millis(60_100)));
    }

    #[test]
    fn plans_with_an_injected_clock() {
        let utc = Zone::utc();
        let now = at("2026-11-29T10:05:10Z");
        // Allow: the most recent missed time starts, the next look is at 10:06:00.1.
        let cj = cronjob("*/1 * * * *", "2026-11-29T10:00:30Z", Some("2026-11-29T10:01:00Z"));
        let p = plan(&cj, now, &utc);
        assert_eq!(p.decision, Decision::Start { scheduled: at("2026-11-29T10:05:00Z"), replace: false });
        assert_eq!(p.requeue, Some(Duration::from_millis(50_100)));
        assert!(!p.many_missed);
        assert_eq!(job_name(&cj, at("2026-11-29T10:05:00Z")), format!("tick-{}", at("2026-11-29T10:05:00Z").timestamp() / 60));
        // Nothing due yet.
        let waiting = cronjob("*/1 * * * *", "2026-11-29T10:00:30Z", Some("2026-11-29T10:05:00Z"));
        assert_eq!(plan(&waiting, now, &utc).decision, Decision::Wait);
        // Its Job is already in `active`.
        let mut seen = cronjob("*/1 * * * *", "2026-11-29T10:00:30Z", Some("2026-11-29T10:01:00Z"));
        let n = job_name(&seen, at("2026-11-29T10:05:00Z"));
        active(&mut seen, &n);
        assert_eq!(plan(&seen, now, &utc).decision, Decision::AlreadyProcessed);
        // Forbid skips while one runs; Replace replaces it; Allow runs both.
        let mut busy = cronjob("*/1 * * * *", "2026-11-29T10:00:30Z", Some("2026-11-29T10:04:00Z"));
        active(&mut busy, "tick-1");
        for (policy, want) in [("Forbid", Decision::Forbidden), ("Replace", Decision::Start { scheduled: at("2026-11-29T10:05:00Z"), replace: true }), ("Allow", Decision::Start { scheduled: at("2026-11-29T10:05:00Z"), replace: false })] {
            busy.spec.as_mut().expect("spec").concurrency_policy = Some(policy.into());
            assert_eq!(plan(&busy, now, &utc).decision, want, "{policy}");
        }
        // Suspended: nothing, and no wake-up.
        let mut off = cronjob("*/1 * * * *", "2026-11-29T10:00:30Z", Some("2026-11-29T10:01:00Z"));
        off.spec.as_mut().expect("spec").suspend = Some(true);
        let p = plan(&off, now, &utc);
        assert_eq!((p.decision, p.requeue), (Decision::Suspended, None));
        // startingDeadlineSeconds 5: 10:05:00 is 10 s late.
        let mut late = cronjob("*/1 * * * *", "2026-11-29T10:00:30Z", Some("2026-11-29T10:01:00Z"));
        late.spec.as_mut().expect("spec").starting_deadline_seconds = Some(5);
        assert_eq!(plan(&late, now, &utc).decision, Decision::Wait);
        late.spec.as_mut().expect("spec").starting_deadline_seconds = Some(15);
        assert_eq!(plan(&late, now, &utc).decision, Decision::Start { scheduled: at("2026-11-29T10:05:00Z"), replace: false });
        // Three hours of missed times: the most recent runs, with the warning.
        let p = plan(&cronjob("*/1 * * * *", "2026-11-29T07:00:30Z", None), now, &utc);
        assert_eq!(p.decision, Decision::Start { scheduled: at("2026-11-29T10:05:00Z"), replace: false });
        assert!(p.many_missed);
        // Time zones: 09:00 in Paris is 08:00 UTC in winter.
        let mut paris = cronjob("0 9 * * *", "2026-11-29T00:00:00Z", None);
        paris.spec.as_mut().expect("spec").time_zone = Some("Europe/Paris".into());
        assert_eq!(plan(&paris, at("2026-11-29T08:00:05Z"), &utc).decision, Decision::Start { scheduled: at("2026-11-29T08:00:00Z"), replace: false });
        assert_eq!(plan(&paris, at("2026-11-29T07:59:05Z"), &utc).decision, Decision::Wait);
        assert_eq!(job_for(&paris, at("2026-11-29T08:00:00Z")).metadata.annotations.expect("annotations")[SCHEDULED_TIMESTAMP], "2026-11-29T09:00:00+01:00");
        paris.spec.as_mut().expect("spec").time_zone = Some("Mars/Olympus".into());
        assert_eq!(plan(&paris, now, &utc).decision, Decision::UnknownTimeZone("invalid timeZone: \"Mars/Olympus\": unknown time zone Mars/Olympus".into()));
        // A TZ= prefix (accepted by old API servers) is honoured, with a warning.
        let tz = plan(&cronjob("CRON_TZ=Europe/Paris 0 9 * * *", "2026-11-29T00:00:00Z", None), at("2026-11-29T08:00:05Z"), &utc);
        assert!(tz.tz_in_schedule);
        assert_eq!(tz.decision, Decision::Start { scheduled: at("2026-11-29T08:00:00Z"), replace: false });
    }

    #[test]
    fn history_limits_keep_the_newest() {
        let job = |name: &str, start: Option<&str>| {
            Arc::new(Job {
                metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
                spec: None,
                status: Some(JobStatus { start_time: start.map(|s| Time(at(s))), conditions: Some(vec![JobCondition { type_: "Complete".into(), status: "True".into(), ..Default::default() }]), ..Default::default() }),
            })
        };
        let jobs = vec![job("c", Some("2026-11-29T10:03:00Z")), job("a", Some("2026-11-29T10:01:00Z")), job("z", None), job("b", Some("2026-11-29T10:02:00Z"))];
        let names = |v: Vec<Arc<Job>>| v.iter().map(|j| j.name_any()).collect::<Vec<_>>();
        assert_eq!(names(beyond_limit(jobs.clone(), 1)), ["a", "b", "c"]);
        assert_eq!(names(beyond_limit(jobs.clone(), 3)), ["a"]);
        assert!(beyond_limit(jobs.clone(), 4).is_empty());
        assert_eq!(names(beyond_limit(jobs, 0)).len(), 4);
        assert_eq!(finished(&job("x", None)), Some("Complete"));
    }
}
