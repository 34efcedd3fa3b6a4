//! The cold tier: packs as objects in an object store (`object_store`): a
//! local directory (`file:///...`) or S3 (`s3://bucket/prefix`).
//!
//! The store's logic is synchronous; this adapter owns a small tokio runtime
//! and blocks on it. Callers inside an async runtime must call the store from
//! `spawn_blocking`.

use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Result, StoreError};
use crate::ids::PackId;

/// Where cold packs live. Implementations: [`ObjectStoreCold`] and the
/// simulator's in-memory tier.
pub trait ColdTier: Send + Sync + std::fmt::Debug {
    /// Writes a whole pack.
    fn put(&self, pack: PackId, bytes: Vec<u8>) -> Result<()>;
    /// Reads a whole pack.
    fn get(&self, pack: PackId) -> Result<Vec<u8>>;
    /// Reads `len` bytes at `offset` of a pack.
    fn get_range(&self, pack: PackId, offset: u64, len: u32) -> Result<Vec<u8>>;
    /// Deletes a pack; deleting a missing pack succeeds.
    fn delete(&self, pack: PackId) -> Result<()>;
    /// The tier's URL, without credentials.
    fn url(&self) -> &str;
}

/// A cold tier on any `object_store` backend.
#[derive(Debug)]
pub struct ObjectStoreCold {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    runtime: tokio::runtime::Runtime,
}

impl ObjectStoreCold {
    /// Opens the tier at `url` (`file:///dir`, `s3://bucket/prefix`,
    /// `memory:///`). S3 credentials and endpoint come from `options`
    /// (`aws_endpoint`, `aws_access_key_id`, …) or the usual `AWS_*`
    /// environment variables.
    pub fn open(url: &str, options: &[(String, String)]) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|error| StoreError::Config(format!("cold_url {url:?}: {error}")))?;
        let (store, prefix): (Arc<dyn ObjectStore>, ObjectPath) = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| StoreError::Config(format!("cold_url {url:?} is not a local path")))?;
                std::fs::create_dir_all(&dir).map_err(|error| StoreError::io("create", &dir, error))?;
                let local = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|error| StoreError::Cold(error.to_string()))?;
                (Arc::new(local), ObjectPath::from("packs"))
            }
            "s3" => {
                install_crypto_provider();
                let mut builder = object_store::aws::AmazonS3Builder::from_env().with_url(url);
                for (key, value) in options {
                    let key = key
                        .parse()
                        .map_err(|error: object_store::Error| StoreError::Config(error.to_string()))?;
                    builder = builder.with_config(key, value);
                }
                let s3 = builder.build().map_err(|error| StoreError::Config(error.to_string()))?;
                let path = parsed.path().trim_matches('/');
                let prefix = if path.is_empty() {
                    ObjectPath::from("packs")
                } else {
                    ObjectPath::from(format!("{path}/packs"))
                };
                (Arc::new(s3), prefix)
            }
            "memory" => (
                Arc::new(object_store::memory::InMemory::new()),
                ObjectPath::from("packs"),
            ),
            other => {
                return Err(StoreError::Config(format!(
                    "cold_url scheme {other:?} (use file:// or s3://)"
                )));
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("omega-cold")
            .enable_all()
            .build()
            .map_err(|error| StoreError::Cold(format!("runtime: {error}")))?;
        Ok(ObjectStoreCold {
            url: url.to_string(),
            store,
            prefix,
            runtime,
        })
    }

    fn location(&self, pack: PackId) -> ObjectPath {
        self.prefix.clone().join(pack.file_name())
    }

    fn failed(&self, action: &str, pack: PackId, error: impl std::fmt::Display) -> StoreError {
        StoreError::Cold(format!("{action} {pack} at {}: {error}", self.url))
    }
}

/// Makes ring rustls's process-wide provider (a second install is a no-op).
fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}

impl ColdTier for ObjectStoreCold {
    fn put(&self, pack: PackId, bytes: Vec<u8>) -> Result<()> {
        let location = self.location(pack);
        self.runtime
            .block_on(self.store.put(&location, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|error| self.failed("put", pack, error))
    }

    fn get(&self, pack: PackId) -> Result<Vec<u8>> {
        let location = self.location(pack);
        self.runtime
            .block_on(async { self.store.get(&location).await?.bytes().await })
            .map(|bytes| bytes.to_vec())
            .map_err(|error| self.failed("get", pack, error))
    }

    fn get_range(&self, pack: PackId, offset: u64, len: u32) -> Result<Vec<u8>> {
        let location = self.location(pack);
        let range = offset..offset + u64::from(len);
        let bytes = self
            .runtime
            .block_on(self.store.get_range(&location, range))
            .map_err(|error| self.failed("read", pack, error))?;
        if bytes.len() != len as usize {
            return Err(self.failed("read", pack, format!("short read: {} of {len} bytes", bytes.len())));
        }
        Ok(bytes.to_vec())
    }

    fn delete(&self, pack: PackId) -> Result<()> {
        let location = self.location(pack);
        match self.runtime.block_on(self.store.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.failed("delete", pack, error)),
        }
    }

    fn url(&self) -> &str {
        &self.url
    }
}
