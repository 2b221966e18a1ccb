//! A writer for the crash test in `tests/conformance.rs`: opens an embedded store and creates
//! keys from several concurrent tasks, printing each key on stdout only after its `create`
//! returned Ok (that is, once the store acknowledged it as durable). The test kills this
//! process with SIGKILL mid-burst and checks that every printed key survived.
//!
//! Usage: `crash_writer <store file> <run name> [tasks]`. Values equal their keys. Stops by
//! itself after a bounded number of writes or seconds, in case nobody kills it.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_store::embedded::Embedded;
use strata_store::Store;

const MAX_PER_TASK: usize = 100_000;
const MAX_TIME: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: crash_writer <store file> <run name> [tasks]";
    let path = PathBuf::from(args.next().ok_or(usage)?);
    let run = args.next().ok_or(usage)?;
    let tasks: usize = args.next().map_or(Ok(8), |t| t.parse())?;

    let store = Arc::new(Embedded::open(&path)?);
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = store.clone();
        let run = run.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..MAX_PER_TASK {
                if started.elapsed() > MAX_TIME {
                    break;
                }
                let key = format!("/crash/{run}/{task:02}/{i:06}");
                store.create(&key, key.clone().into_bytes()).await?;
                // One write per line, so a kill never leaves half a key that looks whole.
                let mut out = std::io::stdout().lock();
                out.write_all(format!("{key}\n").as_bytes())?;
                out.flush()?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for h in handles {
        h.await?.map_err(|e| e.to_string())?;
    }
    Ok(())
}
