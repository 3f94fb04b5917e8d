//! Errors raised while reading model files (GGUF, safetensors, config JSON).
//!
//! Every malformed file maps to one of these variants; nothing in the loader
//! panics or allocates more than a small multiple of the input size on bad
//! input. Messages name the file, key or tensor concerned so that the user
//! knows which download to repeat or which field to fix.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LoadError {
    /// Wraps any other variant with the file it came from.
    #[error("{path}: {source}")]
    InFile {
        path: String,
        #[source]
        source: Box<LoadError>,
    },

    #[error(
        "file is truncated: reading {what} needs {needed} bytes at offset {offset} but the file has {file_len} \
         bytes; the download is probably incomplete, fetch the file again"
    )]
    Truncated { what: String, offset: u64, needed: u64, file_len: u64 },

    /// A streamed header goes on past the prefix read so far: the reader
    /// grows the prefix to `needed_end` bytes (or more) and parses again.
    #[error(
        "the header goes on past the first {prefix} bytes read (to at least byte {needed_end}); read more of the file"
    )]
    HeaderPastPrefix { prefix: u64, needed_end: u64 },

    #[error("not a GGUF file (magic bytes {found:02x?}, expected \"GGUF\")")]
    BadMagic { found: Vec<u8> },

    #[error(
        "GGUF version {version} is not supported (this reader handles versions 2 and 3); re-convert the model with a current llama.cpp"
    )]
    UnsupportedVersion { version: u32 },

    #[error(
        "{what} claims {count} entries, but only {remaining} bytes remain in the file; the file is truncated or corrupt"
    )]
    CountTooLarge { what: String, count: u64, remaining: u64 },

    #[error("{what} is {value}, more than the limit {limit}; the file is corrupt")]
    TooLarge { what: String, value: u64, limit: u64 },

    #[error(
        "metadata key '{key}' has unknown value type id {type_id}; the file is corrupt or from a newer GGUF version"
    )]
    UnknownValueType { key: String, type_id: u32 },

    #[error(
        "tensor '{tensor}' has unknown ggml type id {type_id}; the file is corrupt or uses a quantization this build does not know"
    )]
    UnknownTensorType { tensor: String, type_id: u32 },

    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 { what: String },

    #[error("duplicate {what} '{name}'")]
    Duplicate { what: &'static str, name: String },

    #[error("tensor '{tensor}' has an invalid shape: {message}")]
    BadShape { tensor: String, message: String },

    #[error(
        "tensor '{tensor}' data [{start}, {end}) lies outside the data section of {data_len} bytes; the file is truncated or corrupt"
    )]
    TensorOutOfBounds { tensor: String, start: u64, end: u64, data_len: u64 },

    #[error("tensor '{tensor}' starts at offset {offset}, which is not a multiple of the alignment {alignment}")]
    TensorMisaligned { tensor: String, offset: u64, alignment: u64 },

    #[error("tensors '{first}' and '{second}' overlap in the data section; the file is corrupt")]
    TensorOverlap { first: String, second: String },

    #[error("metadata key '{key}' is missing")]
    MissingKey { key: String },

    #[error("metadata key '{key}' has type {found}, expected {expected}")]
    WrongValueType { key: String, expected: &'static str, found: &'static str },

    #[error("tensor '{name}' not found (searched {searched})")]
    TensorNotFound { name: String, searched: String },

    #[error("tensor '{tensor}' has dtype {found}, expected {expected}")]
    WrongDtype { tensor: String, expected: String, found: String },

    #[error("tensor '{tensor}' has shape {found:?}, expected {expected:?}")]
    WrongShape { tensor: String, expected: Vec<usize>, found: Vec<usize> },

    #[error("cannot decode tensor data: {message}")]
    Quant { message: String },

    #[error(
        "no checkpoint in {dir}: neither model.safetensors.index.json nor model.safetensors is there; \
         pass the .safetensors file or its index .json"
    )]
    NoCheckpoint { dir: String },

    #[error("invalid safetensors file: {message}")]
    Safetensors { message: String },

    #[error("invalid JSON in {what}: {message}")]
    Json { what: String, message: String },

    #[error("inconsistent model config: {message}")]
    Config { message: String },

    #[error("unsupported: {message}")]
    Unsupported { message: String },
}

impl LoadError {
    /// Attach the file name to an error (once: an error already carrying a
    /// file is returned unchanged).
    pub fn in_file(self, path: impl Into<String>) -> Self {
        match self {
            LoadError::InFile { .. } => self,
            other => LoadError::InFile { path: path.into(), source: Box::new(other) },
        }
    }

    /// The error without its file wrapper, for matching in callers and tests.
    pub fn kind(&self) -> &LoadError {
        match self {
            LoadError::InFile { source, .. } => source.kind(),
            other => other,
        }
    }
}
