//! Pack files in the hot directory: many chunks appended to one file, so that
//! millions of chunks do not become millions of tiny files.
//!
//! Durability protocol: bytes are appended, the file is synced, and only then
//! does the index learn where the bytes are. Bytes past a pack's committed
//! length are the remains of an interrupted write and are cut off at open.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Result, StoreError};
use crate::ids::PackId;

/// A pack is sealed once it reaches this size; it may exceed it by one chunk.
pub const PACK_TARGET_BYTES: u64 = 32 * 1024 * 1024;

/// Open read handles kept at most; the cache is emptied when full.
const READ_HANDLES_MAX: usize = 64;

/// The directory of hot packs.
#[derive(Debug)]
pub struct HotPacks {
    dir: PathBuf,
    readers: Mutex<HashMap<PackId, Arc<File>>>,
}

impl HotPacks {
    /// Opens (or creates) the pack directory.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|error| StoreError::io("create", dir, error))?;
        Ok(HotPacks {
            dir: dir.to_path_buf(),
            readers: Mutex::new(HashMap::new()),
        })
    }

    /// The file of `pack`.
    pub fn path(&self, pack: PackId) -> PathBuf {
        self.dir.join(pack.file_name())
    }

    fn reader(&self, pack: PackId) -> std::io::Result<Arc<File>> {
        let mut readers = self.readers.lock().unwrap_or_else(|poison| poison.into_inner());
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

    fn forget_reader(&self, pack: PackId) {
        self.readers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(&pack);
    }

    /// Reads `len` bytes at `offset` of `pack`. A short file is an error.
    pub fn read_at(&self, pack: PackId, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        let file = self.reader(pack)?;
        let mut bytes = vec![0_u8; len as usize];
        file.read_exact_at(&mut bytes, offset)?;
        Ok(bytes)
    }

    /// Reads a whole pack.
    pub fn read_all(&self, pack: PackId) -> Result<Vec<u8>> {
        let path = self.path(pack);
        std::fs::read(&path).map_err(|error| StoreError::io("read", path, error))
    }

    /// Lists the pack files present, with their lengths.
    pub fn list(&self) -> Result<Vec<(PackId, u64)>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|error| StoreError::io("list", &self.dir, error))?;
        let mut packs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| StoreError::io("list", &self.dir, error))?;
            let Some(pack) = entry.file_name().to_str().and_then(PackId::from_file_name) else {
                continue;
            };
            let len = entry
                .metadata()
                .map_err(|error| StoreError::io("stat", entry.path(), error))?
                .len();
            packs.push((pack, len));
        }
        packs.sort();
        Ok(packs)
    }

    /// Deletes a pack file and syncs the directory.
    pub fn remove(&self, pack: PackId) -> Result<()> {
        self.forget_reader(pack);
        let path = self.path(pack);
        match std::fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(StoreError::io("remove", path, error)),
        }
    }

    /// Cuts a pack back to `len` bytes and syncs it.
    pub fn truncate(&self, pack: PackId, len: u64) -> Result<()> {
        self.forget_reader(pack);
        let path = self.path(pack);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|error| StoreError::io("open", &path, error))?;
        file.set_len(len)
            .map_err(|error| StoreError::io("truncate", &path, error))?;
        file.sync_all().map_err(|error| StoreError::io("sync", &path, error))
    }

    /// Syncs the directory, so that created and removed names survive a crash.
    pub fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| StoreError::io("sync", &self.dir, error))
    }

    /// Creates a new, empty pack for appending.
    pub fn create(&self, pack: PackId) -> Result<PackWriter> {
        let path = self.path(pack);
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|error| StoreError::io("create", &path, error))?;
        // The new name must survive a crash before the index points into it.
        self.sync_dir()?;
        Ok(PackWriter {
            pack,
            path,
            file,
            len: 0,
        })
    }

    /// Reopens an existing pack for appending after its `len` committed bytes.
    pub fn reopen(&self, pack: PackId, len: u64) -> Result<PackWriter> {
        let path = self.path(pack);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|error| StoreError::io("open", &path, error))?;
        let on_disk = file
            .metadata()
            .map_err(|error| StoreError::io("stat", &path, error))?
            .len();
        if on_disk != len {
            file.set_len(len)
                .map_err(|error| StoreError::io("truncate", &path, error))?;
        }
        Ok(PackWriter { pack, path, file, len })
    }
}

/// Appends chunks to one pack.
#[derive(Debug)]
pub struct PackWriter {
    pack: PackId,
    path: PathBuf,
    file: File,
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
            .write_all_at(bytes, offset)
            .map_err(|error| StoreError::io("write", &self.path, error))?;
        self.len += bytes.len() as u64;
        Ok(offset)
    }

    /// Makes every appended byte durable.
    pub fn sync(&mut self) -> Result<()> {
        self.file
            .flush()
            .map_err(|error| StoreError::io("write", &self.path, error))?;
        self.file
            .sync_data()
            .map_err(|error| StoreError::io("sync", &self.path, error))
    }
}
