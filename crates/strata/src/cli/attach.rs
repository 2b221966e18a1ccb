//! An attached session: our terminal (or plain pipes) connected to a container's main process,
//! shared by `run` without `-d` and `attach`. Our stdin goes to the container's input, a
//! terminal is put in raw mode and keeps the container's terminal sized (SIGWINCH), SIGINT,
//! SIGTERM and SIGHUP are passed on to the container, and on a terminal the detach keys end the
//! session leaving the container running.

use std::io::Read;
use std::sync::{mpsc, Arc, Mutex};

use strata_driver::{AttachInput, ContainerDriver, Driver};

/// Docker's and podman's default detach keys.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// What connects to a container for a session.
pub struct Session {
    /// The container's input (stdin or terminal); also carries terminal resizes.
    pub input: Option<Box<dyn AttachInput>>,
    /// Copy our stdin to `input`.
    pub stdin: bool,
    /// The container has a terminal.
    pub tty: bool,
    /// The key sequence that detaches (see [`parse_detach_keys`]); honoured only when our
    /// stdin goes to a container terminal, as docker does (piped data may hold any bytes).
    pub detach_keys: Vec<u8>,
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The output ended: the container has exited.
    Exited,
    /// The user typed the detach keys; the container keeps running.
    Detached,
}

enum Event {
    OutputDone(anyhow::Result<()>),
    Detached,
}

type SharedInput = Arc<Mutex<Box<dyn AttachInput>>>;

/// Run a session until `output` (which copies the container's output to ours, on a thread of
/// its own) returns or the user detaches. Our terminal is restored before this returns.
pub fn run(
    driver: Arc<ContainerDriver>,
    id: &str,
    session: Session,
    output: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<Ended> {
    let input: Option<SharedInput> = session.input.map(|i| Arc::new(Mutex::new(i)));
    // Before any other thread starts, so that all of them inherit the blocked signals.
    forward_signals(driver, id.to_string(), if session.tty { input.clone() } else { None });
    let _raw = if session.tty && session.stdin { RawTerminal::enter() } else { None };
    if let (Some(input), true) = (&input, session.tty) {
        resize(input);
    }
    let (events, ended) = mpsc::channel();
    if let (Some(input), true) = (input, session.stdin) {
        let keys = if session.tty { session.detach_keys } else { Vec::new() };
        let events = events.clone();
        std::thread::spawn(move || {
            if pump_stdin(&input, DetachMatcher::new(keys)) {
                let _ = events.send(Event::Detached);
            }
        });
    }
    std::thread::spawn(move || {
        let _ = events.send(Event::OutputDone(output()));
    });
    match ended.recv() {
        Ok(Event::Detached) => Ok(Ended::Detached),
        Ok(Event::OutputDone(r)) => r.map(|()| Ended::Exited),
        Err(_) => anyhow::bail!("the output of container {id} ended unexpectedly"),
    }
}

/// Parse docker's `--detach-keys` format: comma-separated keys, each `ctrl-X` (X one of a-z, @,
/// [, \, ], ^, _) or a single character. The empty string disables detaching.
pub fn parse_detach_keys(spec: &str) -> anyhow::Result<Vec<u8>> {
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    spec.split(',')
        .map(|key| {
            let bad = || anyhow::anyhow!("invalid detach keys {spec:?}: use keys such as ctrl-p,ctrl-q (ctrl-<a-z@[\\]^_> or one character)");
            match (key.as_bytes(), key.to_ascii_lowercase().strip_prefix("ctrl-")) {
                ([c], _) => Ok(*c),
                (_, Some(rest)) => match rest.as_bytes() {
                    [c @ b'a'..=b'z'] => Ok(c - b'a' + 1),
                    [b'@'] => Ok(0),
                    [c @ (b'[' | b'\\' | b']' | b'^' | b'_')] => Ok(c - b'[' + 27),
                    _ => Err(bad()),
                },
                _ => Err(bad()),
            }
        })
        .collect()
}

/// Finds the detach keys in what we read, holding back bytes that may start the sequence.
struct DetachMatcher {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachMatcher {
    fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    /// Append to `out` what `chunk` gives the container; true once the whole sequence has been
    /// typed (whatever follows it is dropped).
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
        if self.keys.is_empty() {
            out.extend_from_slice(chunk);
            return false;
        }
        for &b in chunk {
            if self.matched > 0 && b != self.keys[self.matched] {
                // Not the sequence after all: what was held back goes through.
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return true;
                }
            } else {
                out.push(b);
            }
        }
        false
    }

    /// Bytes held back as a possible start of the sequence.
    fn held(&self) -> &[u8] {
        &self.keys[..self.matched]
    }
}

/// Copy our stdin to the container until EOF (then close its input) or the detach keys (true).
fn pump_stdin(input: &SharedInput, mut detach: DetachMatcher) -> bool {
    let send = |data: &[u8]| data.is_empty() || input.lock().map(|mut i| i.input(data).is_ok()).unwrap_or(false);
    let mut buf = [0u8; 8192];
    let mut out = Vec::new();
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "reading stdin");
                break;
            }
            Ok(n) => {
                out.clear();
                let detached = detach.feed(&buf[..n], &mut out);
                if !send(&out) {
                    return false;
                }
                if detached {
                    return true;
                }
            }
        }
    }
    if send(detach.held()) {
        if let Ok(mut i) = input.lock() {
            let _ = i.close_input();
        }
    }
    false
}

/// Pass SIGINT, SIGTERM and SIGHUP on to the container while attached, as `docker run` does;
/// with a terminal, SIGWINCH resizes the container's terminal instead.
fn forward_signals(driver: Arc<ContainerDriver>, id: String, tty: Option<SharedInput>) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGWINCH] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || loop {
        match set.wait() {
            Ok(Signal::SIGWINCH) => {
                if let Some(t) = &tty {
                    resize(t);
                }
            }
            Ok(sig) => {
                let _ = driver.kill(&id, sig as i32);
            }
            Err(_) => return,
        }
    });
}

/// Tell the container's terminal our terminal's size.
fn resize(input: &SharedInput) {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ fills a winsize for a terminal fd; failure leaves it zeroed.
    let ok = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_row > 0 {
        if let Ok(mut i) = input.lock() {
            let _ = i.resize(ws.ws_row, ws.ws_col);
        }
    }
}

/// Our terminal in raw mode; restored on drop.
pub(super) struct RawTerminal(nix::sys::termios::Termios);

impl RawTerminal {
    pub(super) fn enter() -> Option<RawTerminal> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &self.0);
    }
}

/// Refuse to go on when a container terminal would be fed from something that is not one.
pub fn require_terminal(remedy: &str) -> anyhow::Result<()> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        anyhow::bail!("the input device is not a TTY: {remedy}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_key_specs() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").expect("default"), vec![0x10, 0x11]);
        assert_eq!(parse_detach_keys("ctrl-@,CTRL-[,ctrl-_,x").expect("mixed"), vec![0, 27, 31, b'x']);
        assert_eq!(parse_detach_keys("").expect("disabled"), Vec::<u8>::new());
        for bad in ["ctrl-", "ctrl-pp", "ab", "ctrl-1", "ctrl-p,"] {
            assert!(parse_detach_keys(bad).is_err(), "{bad}");
        }
    }

    /// Feed chunks; returns what was forwarded and whether (after which chunk) it detached.
    fn check(keys: &[u8], chunks: &[&[u8]], forwarded: &[u8], detached_after: Option<usize>) {
        let mut m = DetachMatcher::new(keys.to_vec());
        let mut out = Vec::new();
        let mut detached = None;
        for (i, c) in chunks.iter().enumerate() {
            if m.feed(c, &mut out) {
                detached = Some(i);
                break;
            }
        }
        assert_eq!((out.as_slice(), detached), (forwarded, detached_after), "keys {keys:?} chunks {chunks:?}");
    }

    #[test]
    fn detach_sequence_is_found_across_reads() {
        let seq = [0x10, 0x11];
        check(&seq, &[b"ls\r", &[0x10], &[0x11], b"lost"], b"ls\r", Some(2));
        check(&seq, &[b"a\x10\x11b"], b"a", Some(0));
        // A held-back ctrl-p goes through when the sequence breaks off, and a repeated one
        // still starts it.
        check(&seq, &[&[0x10], b"x", &[0x10, 0x10, 0x11]], b"\x10x\x10", Some(2));
        check(&seq, &[b"plain"], b"plain", None);
        check(&[], &[b"\x10\x11"], b"\x10\x11", None);
        check(b"x", &[b"abxc"], b"ab", Some(0));
    }
}
