//! `strata console vm/NAME`: a VirtualMachine's serial console through the API server
//! (`virtualmachines/console`, see `strata_client::console`), with the kubeconfig as kubectl
//! reads it (`--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`; the current context or
//! `--context`). On a terminal, the terminal is raw and Ctrl-] detaches; otherwise stdin is
//! copied to the console and the output is copied until the server closes the console (the VM
//! stopped). Errors (not found, forbidden, a VM that is not running) exit 125 with the server's
//! message. `strata logs vm/NAME` ([`vm_logs`]) prints the VM's captured serial console the same
//! way.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use strata_client::kube;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Ctrl-]: detach, as telnet, virsh and `strata vm console` do.
const DETACH: u8 = 0x1d;

#[derive(clap::Args, Debug)]
pub struct ConsoleArgs {
    /// The VM: vm/NAME (also virtualmachine/NAME).
    target: String,
    /// The VM's namespace (default: the context's, else "default").
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    context: Option<String>,
}

/// `vm/NAME` -> NAME.
fn vm_name(target: &str) -> anyhow::Result<&str> {
    let (kind, name) = target.split_once('/').with_context(|| format!("{target:?}: expected vm/NAME"))?;
    if !matches!(kind.to_ascii_lowercase().as_str(), "vm" | "vms" | "virtualmachine" | "virtualmachines" | "virtualmachine.strata.dev" | "virtualmachines.strata.dev") {
        anyhow::bail!("{target:?}: only virtual machines have a console (vm/NAME)");
    }
    if name.is_empty() || name.contains('/') {
        anyhow::bail!("{target:?}: expected vm/NAME");
    }
    Ok(name)
}

async fn client(kubeconfig: Option<&std::path::Path>, context: Option<&str>) -> anyhow::Result<kube::Client> {
    let opts = kube::config::KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &opts).await.with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::from_kubeconfig(&opts).await.context("loading the kubeconfig ($KUBECONFIG or ~/.kube/config)")?,
    };
    Ok(kube::Client::try_from(config).context("building the API client")?)
}

pub fn run(a: ConsoleArgs) -> anyhow::Result<()> {
    let name = vm_name(&a.target)?.to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async move {
        let client = client(a.kubeconfig.as_deref(), a.context.as_deref()).await?;
        let ns = a.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
        let ws = strata_client::console::open(&client, &ns, &name).await?;
        relay(ws, &format!("vm/{name}")).await
    })
}

/// `strata logs vm/NAME`: the VM's captured serial console (`virtualmachines/log`) through the
/// API server, with the same kubeconfig rules as `strata console`.
pub fn vm_logs(target: &str, a: &super::container::LogsArgs) -> anyhow::Result<()> {
    let name = vm_name(target)?.to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    rt.block_on(async move {
        let client = client(a.kubeconfig.as_deref(), a.context.as_deref()).await?;
        let ns = a.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
        let opts = strata_client::console::LogOptions { follow: a.follow, tail_lines: a.tail, timestamps: a.timestamps };
        let mut stdout = std::io::stdout();
        strata_client::console::log(&client, &ns, &name, &opts, &mut |b| stdout.write_all(b).and_then(|()| stdout.flush()).is_ok()).await?;
        Ok(())
    })
}

enum Input {
    Data(Vec<u8>),
    Detach,
    Eof,
}

/// Copy between our terminal (or pipes) and the console until Ctrl-] (on a terminal) or the
/// server closes it.
async fn relay(ws: strata_client::console::Console, what: &str) -> anyhow::Result<()> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let raw = if tty { super::attach::RawTerminal::enter() } else { None };
    if raw.is_some() {
        eprint!("[attached to the serial console of {what}; detach with Ctrl-]]\r\n");
    }
    let (tx, mut input) = mpsc::channel::<Input>(16);
    // A thread, not a blocking task: a read of stdin never returns when we detach.
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(Input::Eof);
                    return;
                }
                Ok(n) => {
                    let chunk = &buf[..n];
                    if let Some(pos) = chunk.iter().position(|&b| b == DETACH).filter(|_| tty) {
                        if pos > 0 {
                            let _ = tx.blocking_send(Input::Data(chunk[..pos].to_vec()));
                        }
                        let _ = tx.blocking_send(Input::Detach);
                        return;
                    }
                    if tx.blocking_send(Input::Data(chunk.to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let (mut sink, mut stream) = ws.split();
    let mut input_open = true;
    let mut stdout = std::io::stdout();
    let result = loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    if stdout.write_all(&b).and_then(|()| stdout.flush()).is_err() {
                        break Ok(());
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    let _ = stdout.write_all(t.as_bytes()).and_then(|()| stdout.flush());
                }
                Some(Ok(Message::Close(frame))) => {
                    if let Some(f) = frame.filter(|f| !f.reason.is_empty()) {
                        eprint!("\r\n[{}]\r\n", f.reason);
                    }
                    break Ok(());
                }
                Some(Ok(_)) => {}
                None => break Ok(()),
                Some(Err(e)) => break Err(anyhow::anyhow!("the console of {what}: {e}")),
            },
            i = input.recv(), if input_open => match i {
                Some(Input::Data(d)) => {
                    if let Err(e) = sink.send(Message::Binary(d.into())).await {
                        break Err(anyhow::anyhow!("the console of {what}: {e}"));
                    }
                }
                Some(Input::Detach) => {
                    let _ = sink.send(Message::Close(None)).await;
                    break Ok(());
                }
                // Piped input ended: keep showing the output until the console closes.
                Some(Input::Eof) | None => input_open = false,
            },
        }
    };
    drop(raw);
    if tty {
        eprintln!();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(vm_name("vm/demo").ok(), Some("demo"));
        assert_eq!(vm_name("virtualmachine/demo").ok(), Some("demo"));
        assert!(vm_name("pod/demo").is_err_and(|e| e.to_string().contains("only virtual machines")));
        assert!(vm_name("demo").is_err());
        assert!(vm_name("vm/").is_err());
        assert!(vm_name("vm/a/b").is_err());
    }
}
