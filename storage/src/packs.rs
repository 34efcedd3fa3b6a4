//! Pack files in the hot directory: many chunks appended to one file, so that
//! millions of chunks do not become millions of tiny files.
//!
//! Durability protocol: bytes are appended, the file is synced, and only then
//! does the index learn where the bytes are. Bytes past a pack's committed
//! length are the remains of an interrupted write and are cut off at open.
//!
//! The files live behind [`PackBackend`]: a directory on a node
//! ([`DirPacks`]), a simulated disk in the simulator.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Result, StoreError};
use crate::ids::PackId;

/// A pack is sealed once it reaches this size; it may exceed it by one chunk.
pub const PACK_TARGET_BYTES: u64 = 32 * 1024 * 1024;

/// Open read handles kept at most; the cache is emptied when full.
const READ_HANDLES_MAX: usize = 64;
/// Open write handles kept at most (one pack is written at a time).
const WRITE_HANDLES_MAX: usize = 4;

/// Where pack files live. Creating, removing and truncating a pack are
/// durable when they return; appended bytes are durable after [`sync`].
///
/// [`sync`]: PackBackend::sync
pub trait PackBackend: Send + Sync + std::fmt::Debug {
    /// Reads `len` bytes at `offset` of `pack`; a short pack is an error.
    fn read_at(&self, pack: PackId, offset: u64, len: u32) -> std::io::Result<Vec<u8>>;
    /// Reads a whole pack.
    fn read_all(&self, pack: PackId) -> std::io::Result<Vec<u8>>;
    /// The packs present, with their lengths, in pack order.
    fn list(&self) -> std::io::Result<Vec<(PackId, u64)>>;
    /// Deletes a pack; a missing pack is not an error.
    fn remove(&self, pack: PackId) -> std::io::Result<()>;
    /// Cuts a pack back to `len` bytes.
    fn truncate(&self, pack: PackId, len: u64) -> std::io::Result<()>;
    /// Creates a new, empty pack; an existing one is an error.
    fn create(&self, pack: PackId) -> std::io::Result<()>;
    /// Writes `bytes` at `offset` of `pack`.
    fn write_at(&self, pack: PackId, offset: u64, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes every byte written to `pack` durable.
    fn sync(&self, pack: PackId) -> std::io::Result<()>;
}

/// Packs as files in one directory.
#[derive(Debug)]
pub struct DirPacks {
    dir: PathBuf,
    readers: Mutex<HashMap<PackId, Arc<File>>>,
    writers: Mutex<HashMap<PackId, Arc<File>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl DirPacks {
    /// Opens (or creates) the pack directory.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|error| StoreError::io("create", dir, error))?;
        Ok(DirPacks {
            dir: dir.to_path_buf(),
            readers: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
        })
    }

    fn path(&self, pack: PackId) -> PathBuf {
        self.dir.join(pack.file_name())
    }

    fn reader(&self, pack: PackId) -> std::io::Result<Arc<File>> {
        let mut readers = lock(&self.readers);
        if let Some(file) = readers.get(&pack) {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(File::open(self.path(pack))?);
        if readers.len() >= READ_HANDLES_MAX {
            readers.clear();
        }
        readers.insert(pack, Arc::clone(&file));
        Ok(file)
    }

    fn writer(&self, pack: PackId) -> std::io::Result<Arc<File>> {
        let mut writers = lock(&self.writers);
        if let Some(file) = writers.get(&pack) {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(OpenOptions::new().write(true).open(self.path(pack))?);
        if writers.len() >= WRITE_HANDLES_MAX {
            writers.clear();
        }
        writers.insert(pack, Arc::clone(&file));
        Ok(file)
    }

    fn forget(&self, pack: PackId) {
        lock(&self.readers).remove(&pack);
        lock(&self.writers).remove(&pack);
    }

    /// Syncs the directory, so that created and removed names survive a crash.
    fn sync_dir(&self) -> std::io::Result<()> {
        File::open(&self.dir).and_then(|dir| dir.sync_all())
    }
}

impl PackBackend for DirPacks {
    fn read_at(&self, pack: PackId, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        let file = self.reader(pack)?;
        let mut bytes = vec![0_u8; len as usize];
        file.read_exact_at(&mut bytes, offset)?;
        Ok(bytes)
    }

    fn read_all(&self, pack: PackId) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.path(pack))
    }

    fn list(&self) -> std::io::Result<Vec<(PackId, u64)>> {
        let mut packs = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(pack) = entry.file_name().to_str().and_then(PackId::from_file_name) else {
                continue;
            };
            packs.push((pack, entry.metadata()?.len()));
        }
        packs.sort();
        Ok(packs)
    }

    fn remove(&self, pack: PackId) -> std::io::Result<()> {
        self.forget(pack);
        match std::fs::remove_file(self.path(pack)) {
            Ok(()) => self.sync_dir(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn truncate(&self, pack: PackId, len: u64) -> std::io::Result<()> {
        self.forget(pack);
        let file = OpenOptions::new().write(true).open(self.path(pack))?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn create(&self, pack: PackId) -> std::io::Result<()> {
        let file = OpenOptions::new().create_new(true).write(true).open(self.path(pack))?;
        lock(&self.writers).insert(pack, Arc::new(file));
        // The new name must survive a crash before the index points into it.
        self.sync_dir()
    }

    fn write_at(&self, pack: PackId, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.writer(pack)?.write_all_at(bytes, offset)
    }

    fn sync(&self, pack: PackId) -> std::io::Result<()> {
        self.writer(pack)?.sync_data()
    }
}

/// The hot packs, over a backend; errors name the pack's file.
#[derive(Debug)]
pub struct HotPacks {
    dir: PathBuf,
    backend: Arc<dyn PackBackend>,
}

impl HotPacks {
    /// Opens (or creates) the pack directory `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(HotPacks::on(dir, Arc::new(DirPacks::open(dir)?)))
    }

    /// The packs on `backend`, named as if in `dir`.
    pub fn on(dir: &Path, backend: Arc<dyn PackBackend>) -> Self {
        HotPacks {
            dir: dir.to_path_buf(),
            backend,
        }
    }

    /// The file of `pack`.
    pub fn path(&self, pack: PackId) -> PathBuf {
        self.dir.join(pack.file_name())
    }

    /// Reads `len` bytes at `offset` of `pack`. A short file is an error.
    pub fn read_at(&self, pack: PackId, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        self.backend.read_at(pack, offset, len)
    }

    /// Reads a whole pack.
    pub fn read_all(&self, pack: PackId) -> Result<Vec<u8>> {
        self.backend
            .read_all(pack)
            .map_err(|error| StoreError::io("read", self.path(pack), error))
    }

    /// Lists the pack files present, with their lengths.
    pub fn list(&self) -> Result<Vec<(PackId, u64)>> {
        self.backend
            .list()
            .map_err(|error| StoreError::io("list", &self.dir, error))
    }

    /// Deletes a pack file, durably.
    pub fn remove(&self, pack: PackId) -> Result<()> {
        self.backend
            .remove(pack)
            .map_err(|error| StoreError::io("remove", self.path(pack), error))
    }

    /// Cuts a pack back to `len` bytes, durably.
    pub fn truncate(&self, pack: PackId, len: u64) -> Result<()> {
        self.backend
            .truncate(pack, len)
            .map_err(|error| StoreError::io("truncate", self.path(pack), error))
    }

    /// Creates a new, empty pack for appending.
    pub fn create(&self, pack: PackId) -> Result<PackWriter> {
        self.backend
            .create(pack)
            .map_err(|error| StoreError::io("create", self.path(pack), error))?;
        Ok(PackWriter {
            pack,
            path: self.path(pack),
            backend: Arc::clone(&self.backend),
            len: 0,
        })
    }

    /// Reopens an existing pack for appending after its `len` committed
    /// bytes, cutting off anything after them.
    pub fn reopen(&self, pack: PackId, len: u64) -> Result<PackWriter> {
        let on_disk = self
            .list()?
            .into_iter()
            .find(|(listed, _)| *listed == pack)
            .map(|(_, on_disk)| on_disk)
            .ok_or_else(|| {
                StoreError::io(
                    "open",
                    self.path(pack),
                    std::io::Error::new(std::io::ErrorKind::NotFound, "pack missing"),
                )
            })?;
        if on_disk != len {
            self.truncate(pack, len)?;
        }
        Ok(PackWriter {
            pack,
            path: self.path(pack),
            backend: Arc::clone(&self.backend),
            len,
        })
    }
}

/// Appends chunks to one pack.
#[derive(Debug)]
pub struct PackWriter {
    pack: PackId,
    path: PathBuf,
    backend: Arc<dyn PackBackend>,
    len: u64,
}

impl PackWriter {
    /// The pack being written.
    pub fn pack(&self) -> PackId {
        self.pack
    }

    /// Bytes written so far (committed or not).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `bytes` and returns the offset they start at.
    pub fn append(&mut self, bytes: &[u8]) -> Result<u64> {
        let offset = self.len;
        self.backend
            .write_at(self.pack, offset, bytes)
            .map_err(|error| StoreError::io("write", &self.path, error))?;
        self.len += bytes.len() as u64;
        Ok(offset)
    }

    /// Makes every appended byte durable.
    pub fn sync(&mut self) -> Result<()> {
        self.backend
            .sync(self.pack)
            .map_err(|error| StoreError::io("sync", &self.path, error))
    }
}
