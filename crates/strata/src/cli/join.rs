//! `strata token create|list|delete` (bootstrap tokens, as `kubeadm token`) and `strata agent`
//! (join a cluster with one, then run the node agent).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use strata_client::join::{self, JoinToken};
use strata_client::k8s_openapi::api::core::v1::Secret;
use strata_client::k8s_openapi::ByteString;
use strata_client::kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};

const NAMESPACE: &str = "kube-system";
const SECRET_PREFIX: &str = "bootstrap-token-";
const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
const EXTRA_GROUP: &str = "system:bootstrappers:strata:default-node-token";

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a join token (printed as K10<sha256 of the cluster CA>::<id>.<secret>).
    Create(CreateArgs),
    /// List join tokens.
    #[command(alias = "ls")]
    List(ClientArgs),
    /// Delete join tokens (by id, `<id>.<secret>` or the whole token).
    #[command(alias = "rm")]
    Delete(DeleteArgs),
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// The server's data directory (its admin kubeconfig is used unless --kubeconfig says otherwise).
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "/var/lib/strata")]
    pub data_dir: PathBuf,
    /// An admin kubeconfig.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

impl ClientArgs {
    fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig.clone().unwrap_or_else(|| self.data_dir.join("kubeconfig"))
    }
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// How long the token is good for (e.g. 24h, 30m, 1h30m); 0 never expires.
    #[arg(long, default_value = "24h", value_parser = strata_cron::duration::parse_std)]
    pub ttl: Duration,
    /// A description kept with the token.
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(required = true)]
    pub tokens: Vec<String>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the async runtime")
}

/// The CA of a kubeconfig's current cluster (PEM).
fn kubeconfig_ca(path: &Path) -> anyhow::Result<String> {
    use base64::Engine;
    let kc = strata_client::kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    let current = kc.current_context.clone().unwrap_or_default();
    let cluster_name = kc.contexts.iter().find(|c| c.name == current).and_then(|c| c.context.as_ref()).map(|c| c.cluster.clone());
    let cluster = kc
        .clusters
        .iter()
        .find(|c| Some(&c.name) == cluster_name.as_ref())
        .or(kc.clusters.first())
        .and_then(|c| c.cluster.as_ref())
        .with_context(|| format!("{}: no cluster", path.display()))?;
    if let Some(data) = &cluster.certificate_authority_data {
        let pem = base64::engine::general_purpose::STANDARD.decode(data.trim()).with_context(|| format!("{}: certificate-authority-data", path.display()))?;
        return String::from_utf8(pem).with_context(|| format!("{}: certificate-authority-data", path.display()));
    }
    if let Some(file) = &cluster.certificate_authority {
        return std::fs::read_to_string(file).with_context(|| format!("reading {file}"));
    }
    anyhow::bail!("{}: the cluster has no CA to pin", path.display())
}

fn data(s: &Secret, key: &str) -> String {
    s.data.as_ref().and_then(|d| d.get(key)).map(|b| String::from_utf8_lossy(&b.0).into_owned()).unwrap_or_default()
}

pub fn token(c: TokenCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match c {
            TokenCommand::Create(a) => create(a).await,
            TokenCommand::List(a) => list(a).await,
            TokenCommand::Delete(a) => delete(a).await,
        }
    })
}

async fn secrets(client: &ClientArgs) -> anyhow::Result<Api<Secret>> {
    let path = client.kubeconfig();
    let kube = strata_client::from_kubeconfig(&path, "strata-token").await?;
    Ok(Api::namespaced(kube, NAMESPACE))
}

async fn create(a: CreateArgs) -> anyhow::Result<()> {
    let ca = kubeconfig_ca(&a.client.kubeconfig())?;
    let token = JoinToken::generate(&ca)?;
    let mut d: BTreeMap<String, ByteString> = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        d.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    };
    put("token-id", &token.id);
    put("token-secret", &token.secret);
    put("usage-bootstrap-authentication", "true");
    put("usage-bootstrap-signing", "true");
    put("auth-extra-groups", EXTRA_GROUP);
    if !a.ttl.is_zero() {
        let expires = chrono::Utc::now() + chrono::Duration::from_std(a.ttl).context("--ttl is too long")?;
        put("expiration", &expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    if let Some(desc) = &a.description {
        put("description", desc);
    }
    let secret = Secret {
        metadata: ObjectMeta { name: Some(format!("{SECRET_PREFIX}{}", token.id)), namespace: Some(NAMESPACE.into()), ..Default::default() },
        type_: Some(SECRET_TYPE.into()),
        data: Some(d),
        ..Default::default()
    };
    secrets(&a.client).await?.create(&PostParams::default(), &secret).await.context("creating the token")?;
    println!("{token}");
    Ok(())
}

async fn list(a: ClientArgs) -> anyhow::Result<()> {
    let ca = kubeconfig_ca(&a.kubeconfig())?;
    let hash = join::ca_hash(&ca)?;
    let list = secrets(&a).await?.list(&ListParams::default()).await.context("listing tokens")?;
    let now = chrono::Utc::now();
    let mut rows = Vec::new();
    for s in list.items.iter().filter(|s| s.type_.as_deref() == Some(SECRET_TYPE)) {
        let (id, secret) = (data(s, "token-id"), data(s, "token-secret"));
        let expiration = data(s, "expiration");
        let ttl = match chrono::DateTime::parse_from_rfc3339(&expiration) {
            Ok(t) => {
                let left = (t.with_timezone(&chrono::Utc) - now).num_seconds();
                if left <= 0 {
                    "<expired>".to_string()
                } else if left >= 3600 {
                    format!("{}h", (left + 1800) / 3600)
                } else {
                    format!("{}m", (left + 30) / 60)
                }
            }
            Err(_) if expiration.is_empty() => "<forever>".to_string(),
            Err(_) => "<invalid>".to_string(),
        };
        let mut usages = Vec::new();
        for u in ["authentication", "signing"] {
            if data(s, &format!("usage-bootstrap-{u}")) == "true" {
                usages.push(u);
            }
        }
        let token = JoinToken { ca_hash: hash.clone(), id: id.clone(), secret };
        let shown = if id.is_empty() { "<invalid>".to_string() } else { token.to_string() };
        rows.push(vec![id, shown, ttl, if expiration.is_empty() { "<never>".into() } else { expiration }, usages.join(","), data(s, "description"), data(s, "auth-extra-groups")]);
    }
    super::print_table(&["ID", "TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS"], &rows);
    Ok(())
}

/// The token id in an id, `<id>.<secret>` or a whole join token.
fn token_id(s: &str) -> anyhow::Result<String> {
    let id = match JoinToken::parse(s) {
        Ok(t) => t.id,
        Err(_) => s.split('.').next().unwrap_or("").to_string(),
    };
    anyhow::ensure!(id.len() == 6 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{s:?} is not a token id (6 characters of [a-z0-9]) or a token");
    Ok(id)
}

async fn delete(a: DeleteArgs) -> anyhow::Result<()> {
    let ids = a.tokens.iter().map(|t| token_id(t)).collect::<anyhow::Result<Vec<_>>>()?;
    let api = secrets(&a.client).await?;
    for id in ids {
        api.delete(&format!("{SECRET_PREFIX}{id}"), &DeleteParams::default()).await.with_context(|| format!("deleting token {id}"))?;
        println!("token {id} deleted");
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The API server, `https://HOST:PORT`.
    #[arg(long)]
    pub server: String,
    /// A join token from `strata token create` (needed only for the first start: the node's
    /// kubeconfig is kept in the data directory and used from then on).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The node's name (default: the host name, lower case).
    #[arg(long)]
    pub name: Option<String>,
    /// The agent's own state: the node's kubeconfig (0600) and the pods' files.
    #[arg(long, env = "STRATA_AGENT_DATA_DIR", default_value = "/var/lib/strata/agent")]
    pub data_dir: PathBuf,
    /// How long to wait for the node's certificate to be approved and signed.
    #[arg(long, default_value = "2m", value_parser = strata_cron::duration::parse_std)]
    pub join_timeout: Duration,
    /// Most pods the agent runs on this node.
    #[arg(long, default_value = "110")]
    pub max_pods: u32,
    /// The Node's InternalIP (default: the address of the default route's interface).
    #[arg(long)]
    pub node_ip: Option<std::net::IpAddr>,
    /// The port of the agent's stream endpoint (logs, exec, attach, port-forward through the
    /// API server; kubelet's 10250). A taken port is replaced by a free one.
    #[arg(long, default_value_t = strata_agent::streams::DEFAULT_PORT)]
    pub kubelet_port: u16,
    /// Seconds a VM may run without writing to its serial console before its launcher pod
    /// reports that it did not boot (condition strata.dev/ConsoleOutput, NoConsoleOutput).
    #[arg(long, default_value_t = 120)]
    pub vm_boot_timeout: u64,
    /// DNS and sysctls of the agent's pods.
    #[command(flatten)]
    pub pod_settings: super::node::PodSettingsArgs,
}

/// A node name: a DNS subdomain (lower case letters, digits, '-' and '.').
fn check_node_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    anyhow::ensure!(ok, "invalid node name {name:?}: use lower case letters, digits, '-' and '.' (a DNS subdomain)");
    Ok(())
}

pub fn agent(ctx: &super::Ctx, a: AgentArgs) -> anyhow::Result<()> {
    let name = match &a.name {
        Some(n) => n.clone(),
        None => strata_apiserver::pki::hostname().context("no --name and no host name")?.to_lowercase(),
    };
    check_node_name(&name)?;
    anyhow::ensure!(a.server.starts_with("https://"), "--server must be an https:// URL, not {:?}", a.server);
    let kubeconfig = a.data_dir.join("kubeconfig");
    runtime()?.block_on(async move {
        if kubeconfig.exists() {
            strata_apiserver::files::tighten(&kubeconfig, 0o600)?;
            tracing::info!(path = %kubeconfig.display(), "using the node's kubeconfig");
        } else {
            let token = a.token.as_deref().with_context(|| format!("{} does not exist: --token is needed to join", kubeconfig.display()))?;
            let token = JoinToken::parse(token)?;
            let creds = join::bootstrap(&a.server, &token, &name, a.join_timeout).await.with_context(|| format!("joining {}", a.server))?;
            // Only now is anything written: a refused join leaves nothing behind.
            strata_apiserver::files::private_dir(&a.data_dir).with_context(|| format!("creating {}", a.data_dir.display()))?;
            let yaml = creds.to_kubeconfig_yaml(&format!("system:node:{name}"));
            strata_apiserver::files::write_atomic(&kubeconfig, yaml.as_bytes(), true).with_context(|| format!("writing {}", kubeconfig.display()))?;
            eprintln!("strata agent: joined {} as system:node:{name}; kubeconfig {}", a.server, kubeconfig.display());
        }
        let client = strata_client::from_kubeconfig(&kubeconfig, "strata-agent").await?;
        // The node agent, as `strata server` runs its own, with the node's credentials.
        let mut config = strata_agent::Config::new(name.clone(), a.data_dir.clone());
        config.max_pods = a.max_pods;
        config.vm_boot_timeout = std::time::Duration::from_secs(a.vm_boot_timeout);
        config.node_ip = a.node_ip;
        a.pod_settings.apply(&mut config);
        let ca_pem = strata_client::ca_of_kubeconfig(&kubeconfig)?;
        let agent = super::node::joined_agent(ctx, config, client, ca_pem, a.kubelet_port).await?;
        eprintln!("strata agent: running node {name}");
        tokio::select! {
            r = agent.run() => r.context("node agent"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        assert_eq!(token_id("abcdef").expect("id"), "abcdef");
        assert_eq!(token_id("abcdef.0123456789abcdef").expect("id"), "abcdef");
        assert!(token_id("ABCDEF").is_err());
        assert!(check_node_name("node-2").is_ok());
        assert!(check_node_name("Node_2").is_err());
    }
}
