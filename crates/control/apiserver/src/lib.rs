//! strata's API server: the Kubernetes REST API that `kubectl` and client libraries speak,
//! served over TLS from a [`strata_store::Store`].
//!
//! Read in this order: [`resources`] (the kinds, with [`crd`]'s custom kinds and [`structural`], their schemas), [`api`] (request handling, with [`rv`] for
//! resourceVersion and continue semantics), [`server`]
//! (TLS, authentication), [`watchcache`] (every watch is served from it), then the helpers: [`object`] (metadata rules), [`validate`],
//! [`patch`], [`managed`] (managedFields and server-side apply, over [`fieldpath`]),
//! [`selector`], [`table`], [`discovery`], [`openapi`] and [`openapi_v2`] (with [`gnostic`],
//! its protobuf form), [`status`] (errors), [`auth`] (who is calling), [`rbac`] (what they may
//! do), [`pki`], [`proxy`] (pod streams to node agents).
//!
//! **Invariant:** only this crate knows HTTP; the store knows nothing of Kubernetes objects
//! (it stores bytes under keys), and objects never carry `resourceVersion` in storage: it is
//! the store's revision, added on the way out.

pub mod admission_webhooks;
pub mod api;
pub mod audit;
pub mod autoscaling;
pub mod binding;
pub mod auth;
pub mod bootstrap;
pub mod convert;
pub mod celenv;
pub mod celrules;
pub mod clusterip;
pub mod componentstatus;
pub mod crd;
pub mod csi;
pub mod csr;
pub mod discovery;
pub mod encryption;
pub mod endpoints;
pub mod ephemeral;
pub mod eviction;
pub mod fieldpath;
pub mod fields;
pub mod flowcontrol;
pub mod files;
pub mod fuzzing;
pub mod job;
pub mod jsonpath;
pub mod limitrange;
pub mod gnostic;
pub mod k8s_docs;
pub mod k8s_meta;
pub mod k8s_messages;
mod k8s_printers;
mod k8s_apiservices;
mod apiservices;
mod health;
pub mod kubernetes_service;
pub mod managed;
pub mod metrics;
pub mod migrate;
pub mod networking;
pub mod node;
pub mod object;
pub mod output;
pub mod openapi;
pub mod openapi_v2;
pub mod patch;
pub mod pki;
pub mod policy;
pub mod priority;
pub mod qos;
pub mod quantity;
pub mod quota;
pub mod rawjson;
pub mod runtimeclass;
pub mod storage;
pub mod protobuf;
pub mod proxy;
pub mod rbac;
pub mod shared_pki;
pub mod resources;
pub mod reviews;
pub mod satoken;
pub mod rv;
pub mod selector;
pub mod serviceaccount;
pub mod server;
pub mod status;
pub mod structural;
pub mod table;
pub mod tolerations;
pub mod validate;
pub mod vm;
pub mod watchcache;
pub mod vap;
pub mod webhooks;
pub mod yaml;

pub use server::{Server, ServerConfig, ServerError};
