//! One cluster identity for every server on one store: servers that share an etcd serve one
//! cluster, so they must share its CA (a kubeconfig, a node's client certificate or a join
//! token's CA hash made by one is trusted by all) and the key that signs ServiceAccount tokens (a
//! pod's token is accepted by whichever server it reaches). kubeadm copies these files to each
//! control-plane machine (`--upload-certs`); k3s keeps them in its datastore. strata keeps them
//! in the store under [`KEY`], outside the Kubernetes resources (no API request reads it):
//!
//! - the first server of a store publishes its own (made at its first start, or kept from an
//!   earlier single-server life of its data dir);
//! - a server whose data dir has no CA yet takes the store's, then issues its own serving and
//!   admin certificates from it;
//! - a server whose data dir has another CA is refused with what to do: it belongs to another
//!   cluster (unless it just made that CA this start and lost the race to publish: then it takes
//!   the winner's and re-issues its certificates).
//!
//! The record holds private keys: whoever can read the store can act as the cluster anyway (it
//! can write any RBAC binding), so it is the same trust boundary, as in k3s without a token. Only
//! servers on etcd use it; the embedded store has one server.

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_store::Store;

use crate::pki::{ensure, Issue, Pki, PkiError, Renewed};

/// The store key of the cluster identity.
pub const KEY: &str = "/bootstrap/cluster-identity";

#[derive(Debug, thiserror::Error)]
pub enum SharedPkiError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("the cluster identity in the store: {0}")]
    Store(#[from] strata_store::Error),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the cluster identity in the store ({KEY}) is not readable: {0}")]
    Corrupt(String),
    #[error("the signing key of ServiceAccount tokens: {0}")]
    ServiceAccountKey(#[from] crate::satoken::TokenError),
    #[error(
        "{ca} is not the CA of the cluster this store holds (another server created that cluster): this data directory belongs to another cluster. To join this server to the store's cluster, start it with a data directory without pki/"
    )]
    OtherCluster { ca: std::path::PathBuf },
}

/// The shared files, PEM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    ca_crt: String,
    ca_key: String,
    sa_key: String,
}

fn read(path: &Path) -> Result<String, SharedPkiError> {
    std::fs::read_to_string(path).map_err(|source| SharedPkiError::Io { path: path.to_path_buf(), source })
}

fn write(path: &Path, data: &str, secret: bool) -> Result<(), SharedPkiError> {
    crate::files::write_atomic(path, data.as_bytes(), secret).map_err(PkiError::from)?;
    Ok(())
}

impl Identity {
    fn of(pki: &Pki) -> Result<Identity, SharedPkiError> {
        // Made here if this data dir has none yet (the server would make it at bind).
        crate::satoken::Signer::load_or_create(&pki.service_account_key())?;
        Ok(Identity { ca_crt: read(&pki.ca_cert())?, ca_key: read(&pki.ca_key())?, sa_key: read(&pki.service_account_key())? })
    }

    /// Make `pki`'s CA and token key these; certificates issued from another CA go.
    fn install(&self, pki: &Pki) -> Result<(), SharedPkiError> {
        crate::files::private_dir(&pki.dir).map_err(PkiError::from)?;
        for leaf in [pki.server_cert(), pki.server_key(), pki.admin_cert(), pki.admin_key()] {
            match std::fs::remove_file(&leaf) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(SharedPkiError::Io { path: leaf, source }),
            }
        }
        write(&pki.ca_key(), &self.ca_key, true)?;
        write(&pki.service_account_key(), &self.sa_key, true)?;
        write(&pki.ca_cert(), &self.ca_crt, false)
    }
}

async fn load(store: &dyn Store) -> Result<Option<Identity>, SharedPkiError> {
    match store.get(KEY).await? {
        Some(kv) => serde_json::from_slice(&kv.value).map(Some).map_err(|e| SharedPkiError::Corrupt(e.to_string())),
        None => Ok(None),
    }
}

/// [`ensure`] for a server on a shared store: the CA and the token signing key are the store's
/// (published by this server if it is the first), then this server's certificates are issued.
pub async fn ensure_shared(store: &dyn Store, dir: &Path, issue: &Issue) -> Result<(Pki, Renewed), SharedPkiError> {
    let pki = Pki { dir: dir.to_path_buf() };
    let local_ca = pki.ca_cert().exists() && pki.ca_key().exists();
    if let Some(shared) = load(store).await? {
        if !local_ca {
            shared.install(&pki)?;
            tracing::info!(key = KEY, "took the cluster's CA and token signing key from the store");
        } else if read(&pki.ca_cert())? != shared.ca_crt {
            return Err(SharedPkiError::OtherCluster { ca: pki.ca_cert() });
        } else if !pki.service_account_key().exists() || read(&pki.service_account_key())? != shared.sa_key {
            write(&pki.service_account_key(), &shared.sa_key, true)?;
        }
        return Ok(ensure(dir, issue)?);
    }
    let (pki, renewed) = ensure(dir, issue)?;
    let ours = Identity::of(&pki)?;
    let body = serde_json::to_vec(&ours).map_err(|e| SharedPkiError::Corrupt(e.to_string()))?;
    match store.create(KEY, body).await {
        Ok(_) => {
            tracing::info!(key = KEY, "published this cluster's CA and token signing key in the store");
            Ok((pki, renewed))
        }
        Err(strata_store::Error::AlreadyExists(_)) => {
            // Another server published first, between our read and our write.
            let Some(theirs) = load(store).await? else {
                return Err(SharedPkiError::Corrupt("published and gone again".into()));
            };
            if theirs == ours {
                return Ok((pki, renewed));
            }
            if !renewed.ca_created {
                return Err(SharedPkiError::OtherCluster { ca: pki.ca_cert() });
            }
            theirs.install(&pki)?;
            let (pki, mut again) = ensure(dir, issue)?;
            again.ca_created = false;
            Ok((pki, again))
        }
        Err(e) => Err(e.into()),
    }
}
