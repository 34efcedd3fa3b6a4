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

/// One pack open for appending. Its bytes are durable after [`sync`],
/// which syncs through the very handle they were written through (so that
/// a writeback error cannot be missed); dropping it closes the file.
///
/// [`sync`]: PackFile::sync
pub trait PackFile: Send + std::fmt::Debug {
    /// Writes `bytes` at `offset`.
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()>;
    /// Makes every byte written through this handle durable.
    fn sync(&mut self) -> std::io::Result<()>;
}

/// Where pack files live. Creating, removing and truncating a pack are
/// durable when they return; appended bytes once their [`PackFile`] syncs.
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
    /// Creates a new, empty pack, durably, open for appending; an existing
    /// one is an error.
    fn create(&self, pack: PackId) -> std::io::Result<Box<dyn PackFile>>;
    /// Opens an existing pack for appending after its first `len` bytes,
    /// cutting off (durably) anything after them; a missing pack is a
    /// `NotFound` error.
    fn append_after(&self, pack: PackId, len: u64) -> std::io::Result<Box<dyn PackFile>>;
    /// The open file of `pack`, for a server that sends its bytes without
    /// reading them (`sendfile`); `None` where packs are not files (the
    /// simulator's disk).
    fn file(&self, _pack: PackId) -> Option<std::io::Result<Arc<File>>> {
        None
    }
}

/// Packs as files in one directory.
#[derive(Debug)]
pub struct DirPacks {
    dir: PathBuf,
    readers: Mutex<HashMap<PackId, Arc<File>>>,
}

/// A pack file open for appending.
#[derive(Debug)]
struct DirPackFile(File);

impl PackFile for DirPackFile {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.0.write_all_at(bytes, offset)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.0.sync_data()
    }
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

    fn forget(&self, pack: PackId) {
        lock(&self.readers).remove(&pack);
    }

    /// Syncs the directory, so that created and removed names survive a crash.
    fn sync_dir(&self) -> std::io::Result<()> {
        File::open(&self.dir).and_then(|dir| dir.sync_all())
    }
}

impl PackBackend for DirPacks {
    fn file(&self, pack: PackId) -> Option<std::io::Result<Arc<File>>> {
        Some(self.reader(pack))
    }

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

    fn create(&self, pack: PackId) -> std::io::Result<Box<dyn PackFile>> {
        let file = OpenOptions::new().create_new(true).write(true).open(self.path(pack))?;
        // The new name must survive a crash before the index points into it.
        self.sync_dir()?;
        Ok(Box::new(DirPackFile(file)))
    }

    fn append_after(&self, pack: PackId, len: u64) -> std::io::Result<Box<dyn PackFile>> {
        let file = OpenOptions::new().write(true).open(self.path(pack))?;
        if file.metadata()?.len() != len {
            self.forget(pack);
            file.set_len(len)?;
            file.sync_all()?;
        }
        Ok(Box::new(DirPackFile(file)))
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

    /// The open file of `pack`, where packs are files.
    pub fn file(&self, pack: PackId) -> Option<std::io::Result<Arc<File>>> {
        self.backend.file(pack)
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
        let file = self
            .backend
            .create(pack)
            .map_err(|error| StoreError::io("create", self.path(pack), error))?;
        Ok(PackWriter {
            pack,
            path: self.path(pack),
            file,
            len: 0,
        })
    }

    /// Reopens an existing pack for appending after its `len` committed
    /// bytes, cutting off anything after them.
    pub fn reopen(&self, pack: PackId, len: u64) -> Result<PackWriter> {
        let file = self
            .backend
            .append_after(pack, len)
            .map_err(|error| StoreError::io("open", self.path(pack), error))?;
        Ok(PackWriter {
            pack,
            path: self.path(pack),
            file,
            len,
        })
    }
}

/// Appends chunks to one pack; the file closes when it is dropped.
#[derive(Debug)]
pub struct PackWriter {
    pack: PackId,
    path: PathBuf,
    file: Box<dyn PackFile>,
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
        self.file
            .write_at(offset, bytes)
            .map_err(|error| StoreError::io("write", &self.path, error))?;
        self.len += bytes.len() as u64;
        Ok(offset)
    }

    /// Makes every appended byte durable.
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .sync()
            .map_err(|error| StoreError::io("sync", &self.path, error))
    }
}
