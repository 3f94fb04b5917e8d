//! File bytes, memory-mapped from disk or owned in memory.

use std::path::Path;

use crate::{Error, Result};

pub(crate) enum FileBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl FileBytes {
    pub(crate) fn map(path: &Path) -> Result<Self> {
        let shown = || path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| Error::Io { path: shown(), source })?;
        // SAFETY: the map is read-only; like every memory-mapped loader we
        // rely on the file not being truncated by another process while in use.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| Error::Io { path: shown(), source })?;
        Ok(FileBytes::Mapped(map))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(map) => map,
            FileBytes::Owned(vec) => vec,
        }
    }
}
