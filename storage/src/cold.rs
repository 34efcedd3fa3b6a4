//! The cold tier: packs as objects in an object store (`object_store`): a
//! local directory (`file:///...`) or S3 (`s3://bucket/prefix`).
//!
//! The store's logic is synchronous; this adapter owns a small tokio runtime
//! and blocks on it. Callers inside an async runtime must call the store from
//! `spawn_blocking`.
//!
//! A put is durable when it returns, as on S3: demotion deletes the hot copy
//! right after. object_store's local backend writes an object to a temporary
//! file and renames it into place without syncing either, so on `file://`
//! the object and its directories are synced here (through `LocalSync`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Result, StoreError};
use crate::ids::PackId;

/// Where cold packs live. Implementations: [`ObjectStoreCold`] and the
/// simulator's in-memory tier.
pub trait ColdTier: Send + Sync + std::fmt::Debug {
    /// Writes a whole pack, durably: once this returns, the pack survives a
    /// crash or power cut.
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
    /// The directory of a `file://` tier, whose puts are synced here.
    local: Option<LocalDir>,
}

/// Makes files and directories of a local cold tier durable. A seam, so that
/// tests see when a cold object became durable.
pub(crate) trait LocalSync: Send + Sync + std::fmt::Debug {
    /// Flushes a file's bytes and metadata to stable storage.
    fn sync_file(&self, path: &Path) -> std::io::Result<()>;
    /// Flushes a directory's entries (names created or renamed in it).
    fn sync_dir(&self, path: &Path) -> std::io::Result<()>;
}

/// [`LocalSync`] through the file system.
#[derive(Debug)]
pub(crate) struct FsSync;

impl LocalSync for FsSync {
    fn sync_file(&self, path: &Path) -> std::io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }

    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }
}

/// The root directory of a `file://` tier and how to sync under it.
#[derive(Debug)]
struct LocalDir {
    root: PathBuf,
    sync: Arc<dyn LocalSync>,
}

impl LocalDir {
    /// Syncs the object of `pack`, then the directory its name was renamed
    /// into, then the root (object_store may have just created `packs/`).
    fn make_durable(&self, pack: PackId) -> std::io::Result<()> {
        let packs = self.root.join(LOCAL_PACKS_DIR);
        self.sync.sync_file(&packs.join(pack.file_name()))?;
        self.sync.sync_dir(&packs)?;
        self.sync.sync_dir(&self.root)
    }
}

/// The directory of the packs under a cold tier's root or prefix.
const LOCAL_PACKS_DIR: &str = "packs";

impl ObjectStoreCold {
    /// Opens the tier at `url` (`file:///dir`, `s3://bucket/prefix`,
    /// `memory:///`). S3 credentials and endpoint come from `options`
    /// (`aws_endpoint`, `aws_access_key_id`, …) or the usual `AWS_*`
    /// environment variables.
    pub fn open(url: &str, options: &[(String, String)]) -> Result<Self> {
        ObjectStoreCold::open_with_sync(url, options, Arc::new(FsSync))
    }

    /// Opens the tier at `url`; a `file://` tier syncs through `sync`.
    pub(crate) fn open_with_sync(url: &str, options: &[(String, String)], sync: Arc<dyn LocalSync>) -> Result<Self> {
        let mut local = None;
        let parsed = url::Url::parse(url).map_err(|error| StoreError::Config(format!("cold_url {url:?}: {error}")))?;
        let (store, prefix): (Arc<dyn ObjectStore>, ObjectPath) = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| StoreError::Config(format!("cold_url {url:?} is not a local path")))?;
                std::fs::create_dir_all(&dir).map_err(|error| StoreError::io("create", &dir, error))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|error| StoreError::Cold(error.to_string()))?;
                local = Some(LocalDir { root: dir, sync });
                (Arc::new(store), ObjectPath::from(LOCAL_PACKS_DIR))
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
            local,
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
            .map_err(|error| self.failed("put", pack, error))?;
        match &self.local {
            Some(local) => local
                .make_durable(pack)
                .map_err(|error| self.failed("sync", pack, error)),
            None => Ok(()),
        }
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
