//! Pull progress: a bar per layer on a terminal (indicatif), plain lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_driver::images::Progress;

pub struct PullProgress {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    quiet: bool,
}

fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

impl PullProgress {
    pub fn new(quiet: bool) -> Self {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self { multi, bars: Mutex::new(HashMap::new()), quiet }
    }

    fn line(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(msg);
            }
            None => eprintln!("{msg}"),
        }
    }
}

impl Progress for PullProgress {
    fn layer_start(&self, digest: &str, size: u64) {
        let Some(multi) = &self.multi else {
            self.line(&format!("{}: downloading ({size} bytes)", short(digest)));
            return;
        };
        let bar = multi.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix}: {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(short(digest).to_string());
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(digest.to_string(), bar);
        }
    }

    fn layer_advance(&self, digest: &str, bytes: u64) {
        if let Some(bar) = self.bars.lock().ok().and_then(|b| b.get(digest).cloned()) {
            bar.inc(bytes);
        }
    }

    fn layer_done(&self, digest: &str, already_present: bool) {
        let bar = self.bars.lock().ok().and_then(|mut b| b.remove(digest));
        let what = if already_present { "already exists" } else { "pull complete" };
        match bar {
            Some(bar) => bar.finish_with_message(what),
            None => self.line(&format!("{}: {what}", short(digest))),
        }
    }

    fn message(&self, msg: &str) {
        self.line(msg);
    }
}
