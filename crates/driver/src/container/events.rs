//! The pod containers' events feed ([`PodRuntime::subscribe`]): one watcher thread per driver,
//! started by the first subscriber and ended when the last one has gone.
//!
//! The watcher knows each pod container's last state. Running containers are watched through
//! a pidfd on their supervisor, which exits right after recording the exit (`exit.json`): the
//! exit is reported as soon as it is recorded, with the code, signal and OOM verdict the
//! supervisor read. A call of this driver that changes a container's record pokes the watcher
//! with that container's id, and an exited supervisor names its container: the watcher then
//! reads those records only, so an event costs the same with 10 or 1,000 containers on the
//! node. Every [`RESCAN`] it reads them all, for changes made by other processes.
//! Containers that existed before the watcher started are its baseline: what happened to them
//! before is for the caller to read with `list_containers` (subscribe first, then list).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pod::{ContainerState, PodEvent, PodEventKind};
use crate::registry::now;

use super::ContainerDriver;

/// How often the watcher reads every record, for changes made by other processes.
const RESCAN: Duration = Duration::from_secs(10);

/// Subscribers and the watcher's wake-up pipe, shared by a driver and its watcher.
#[derive(Default)]
pub(crate) struct Hub {
    inner: Mutex<HubInner>,
}

#[derive(Default)]
struct HubInner {
    subscribers: Vec<mpsc::Sender<PodEvent>>,
    /// Write end of the running watcher's wake-up pipe.
    wake: Option<OwnedFd>,
    /// Containers whose records changed since the watcher last looked.
    poked: HashSet<String>,
}

impl Hub {
    /// Send an event to every subscriber; forget those that have gone. False when none is left.
    pub fn publish(&self, event: PodEvent) -> bool {
        let Ok(mut inner) = self.inner.lock() else { return false };
        inner.subscribers.retain(|s| s.send(event.clone()).is_ok());
        !inner.subscribers.is_empty()
    }

    /// Ask the watcher to look at container `id`'s record now (it was created, started or
    /// removed by this driver).
    pub fn poke(&self, id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            if inner.wake.is_some() {
                inner.poked.insert(id.to_string());
            }
            if let Some(w) = &inner.wake {
                // SAFETY: one byte to a pipe we own; a full pipe already means "look".
                unsafe { libc::write(w.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
            }
        }
    }

    fn has_subscribers(&self) -> bool {
        self.inner.lock().is_ok_and(|i| !i.subscribers.is_empty())
    }

    fn take_poked(&self) -> HashSet<String> {
        self.inner.lock().map(|mut i| std::mem::take(&mut i.poked)).unwrap_or_default()
    }
}

impl ContainerDriver {
    /// A new subscriber; starts the watcher if none runs.
    pub(crate) fn subscribe_events(&self) -> Result<mpsc::Receiver<PodEvent>, crate::Error> {
        let (tx, rx) = mpsc::channel();
        let mut inner = self.events.inner.lock().map_err(|_| crate::Error::Internal("event hub poisoned".into()))?;
        inner.subscribers.push(tx);
        if inner.wake.is_none() {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| crate::Error::Io { context: "creating the event watcher's pipe".into(), source: e.into() })?;
            inner.wake = Some(w);
            let driver = self.clone();
            // The baseline is taken before this returns, so nothing after it is missed.
            let known = driver.pod_container_states();
            std::thread::Builder::new()
                .name("strata-pod-events".into())
                .spawn(move || driver.watch(r, known))
                .map_err(crate::Error::io("starting the event watcher"))?;
        }
        Ok(rx)
    }

    /// Every pod container's (sandbox, state, supervisor).
    fn pod_container_states(&self) -> HashMap<String, Known> {
        let Ok(records) = self.records() else { return HashMap::new() };
        records.iter().filter_map(|r| Some((r.id.clone(), self.known(r)?))).collect()
    }

    fn known(&self, r: &super::Record) -> Option<Known> {
        let s = self.pod_container_status(r)?;
        Some(Known { sandbox: s.sandbox_id, state: s.state, shim: r.shim_pid.zip(r.shim_start) })
    }

    fn watch(self, wake: OwnedFd, mut known: HashMap<String, Known>) {
        let mut pidfds: HashMap<String, OwnedFd> = HashMap::new();
        // What to look at: every record (`None`), or those of these containers.
        let mut look: Option<HashSet<String>> = None;
        let mut last_full = Instant::now();
        loop {
            // Look at the records: new containers, starts, exits.
            let now_states = match &look {
                None => {
                    last_full = Instant::now();
                    self.pod_container_states()
                }
                Some(ids) => ids.iter().filter_map(|id| Some((id.clone(), self.known(&self.load(id).ok()?)?))).collect(),
            };
            let mut alive = true;
            for (id, k) in &now_states {
                let before = known.get(id).map(|k| k.state);
                let events = transitions(before, k.state);
                for kind in events {
                    let kind = match kind {
                        Transition::Started => PodEventKind::Started,
                        Transition::Exited => match self.load(id).ok().and_then(|r| self.pod_container_status(&r)).and_then(|s| s.exit) {
                            Some(exit) => PodEventKind::Exited(exit),
                            None => continue,
                        },
                    };
                    alive = self.events.publish(PodEvent { container_id: id.clone(), sandbox_id: k.sandbox.clone(), kind, time: now() });
                }
            }
            // Containers looked at and not found are gone.
            let looked: Vec<String> = match look.take() {
                None => known.keys().cloned().collect(),
                Some(ids) => ids.into_iter().collect(),
            };
            for id in looked {
                if !now_states.contains_key(&id) {
                    known.remove(&id);
                    pidfds.remove(&id);
                }
            }
            // Watch the supervisors of running containers.
            for (id, k) in now_states {
                if k.state != ContainerState::Running {
                    pidfds.remove(&id);
                } else if !pidfds.contains_key(&id) {
                    if let Some(fd) = k.shim.and_then(|(p, _)| pidfd(p)) {
                        pidfds.insert(id.clone(), fd);
                    }
                }
                known.insert(id, k);
            }
            if !alive || !self.events.has_subscribers() {
                break;
            }
            let (ids, fds): (Vec<&String>, Vec<i32>) = pidfds.iter().map(|(id, f)| (id, f.as_raw_fd())).unzip();
            let mut polled: Vec<libc::pollfd> = std::iter::once(wake.as_raw_fd()).chain(fds).map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
            let timeout = RESCAN.saturating_sub(last_full.elapsed());
            // SAFETY: a valid array of pollfds.
            unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, timeout.as_millis() as i32) };
            if polled[0].revents != 0 {
                let mut buf = [0u8; 64];
                // SAFETY: reading into a local buffer from our non-blocking pipe.
                while unsafe { libc::read(wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
            }
            // An exited supervisor has recorded the exit: the next look reports it.
            let mut dirty = self.events.take_poked();
            let exited: Vec<String> = polled[1..].iter().zip(ids).filter(|(p, _)| p.revents != 0).map(|(_, id)| id.clone()).collect();
            for id in exited {
                // Readable for good: opened again only if the container is still running.
                pidfds.remove(&id);
                dirty.insert(id);
            }
            look = (last_full.elapsed() < RESCAN).then_some(dirty);
        }
        if let Ok(mut inner) = self.events.inner.lock() {
            // A subscriber that came meanwhile starts a new watcher.
            inner.wake = None;
            if !inner.subscribers.is_empty() {
                drop(inner);
                if let Ok(rx) = self.subscribe_events() {
                    // Hand over: the new watcher serves everyone; this receiver is not needed.
                    drop(rx);
                }
            }
        }
    }
}

/// What the watcher remembers of a container.
struct Known {
    sandbox: String,
    state: ContainerState,
    shim: Option<(i32, u64)>,
}

enum Transition {
    Started,
    Exited,
}

/// The events between two looks at a container (`None`: not seen before, so created since).
fn transitions(before: Option<ContainerState>, now: ContainerState) -> Vec<Transition> {
    use ContainerState::*;
    match (before, now) {
        (None | Some(Created), Running) => vec![Transition::Started],
        (None | Some(Created), Exited) => vec![Transition::Started, Transition::Exited],
        (Some(Running | Unknown), Exited) => vec![Transition::Exited],
        _ => vec![],
    }
}

fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    // SAFETY: a fresh descriptor we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Keep the hub alive as long as a driver or watcher holds it.
pub(crate) type SharedHub = Arc<Hub>;
