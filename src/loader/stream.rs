//! Model files read by byte range instead of whole: what lets a browser
//! load a model bigger than its wasm heap (a `File` or a cached `Blob` is
//! read one tensor at a time, uploaded, and dropped).
//!
//! [`ByteSource`] is the reader: a length and async ranged reads. This
//! module has the in-memory one (`Vec<u8>`) and, natively, [`FileSource`]
//! over a file (tests and tools); `web/` has the one over a JS `Blob`.
//! [`read_exact`] wraps every read of the loaders so a short read (a
//! truncated file, a source that lies about its length) becomes an error
//! naming the file and what was being read.

use std::future::Future;
use std::pin::Pin;

use super::error::LoadError;
use crate::{Error, Result};

/// A boxed future without a `Send` bound: on wasm the futures of JS
/// promises are tied to the page's one thread.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A file read by byte range.
pub trait ByteSource {
    /// The file's length in bytes.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `len` bytes at `offset`. May return fewer at the end of the
    /// file; [`read_exact`] turns that into an error.
    fn read(&self, offset: u64, len: u64) -> LocalFuture<'_, Result<Vec<u8>>>;
}

impl<S: ByteSource + ?Sized> ByteSource for Box<S> {
    fn len(&self) -> u64 {
        (**self).len()
    }

    fn read(&self, offset: u64, len: u64) -> LocalFuture<'_, Result<Vec<u8>>> {
        (**self).read(offset, len)
    }
}

/// Bytes already in memory (small files, tests, the browser's `{bytes}` files).
impl ByteSource for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }

    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    fn read(&self, offset: u64, len: u64) -> LocalFuture<'_, Result<Vec<u8>>> {
        let file_len = ByteSource::len(self);
        let start = offset.min(file_len) as usize;
        let end = offset.saturating_add(len).min(file_len) as usize;
        let bytes = self[start..end].to_vec();
        Box::pin(async move { Ok(bytes) })
    }
}

/// The bytes `[offset, offset + len)` of `source` (called `file` in errors),
/// or an error saying the file ended early: `what` names the tensor or
/// header part being read.
pub async fn read_exact(source: &dyn ByteSource, file: &str, what: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
    let truncated = || -> Error {
        LoadError::Truncated { what: what.to_string(), offset, needed: len, file_len: source.len() }
            .in_file(file)
            .into()
    };
    if offset.checked_add(len).is_none_or(|end| end > source.len()) {
        return Err(truncated());
    }
    let bytes = source.read(offset, len).await.map_err(|e| match e {
        Error::Load(inner) => Error::Load(inner.in_file(file)),
        other => Error::Invalid(format!("{file}: reading {what}: {other}")),
    })?;
    if bytes.len() as u64 != len {
        return Err(truncated());
    }
    Ok(bytes)
}

/// The whole of a (small) file: config.json, tokenizer.json.
pub async fn read_all(source: &dyn ByteSource, file: &str) -> Result<Vec<u8>> {
    read_exact(source, file, "the whole file", 0, source.len()).await
}

/// A file on disk, read with positioned reads (no map, no whole copy).
#[cfg(not(target_arch = "wasm32"))]
pub struct FileSource {
    path: String,
    file: std::fs::File,
    len: u64,
}

#[cfg(not(target_arch = "wasm32"))]
impl FileSource {
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| Error::Io { path: shown.clone(), source })?;
        let len = file.metadata().map_err(|source| Error::Io { path: shown.clone(), source })?.len();
        Ok(FileSource { path: shown, file, len })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ByteSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, offset: u64, len: u64) -> LocalFuture<'_, Result<Vec<u8>>> {
        let result = (|| {
            use std::io::{Read, Seek, SeekFrom};
            let len = len.min(self.len.saturating_sub(offset));
            let mut bytes = vec![0u8; len as usize];
            // `&File` reads and seeks without `&mut self`: reads are one at a time here.
            let mut file = &self.file;
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut bytes)?;
            Ok(bytes)
        })()
        .map_err(|source| Error::Io { path: self.path.clone(), source });
        Box::pin(async move { result })
    }
}
