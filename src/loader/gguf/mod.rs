//! GGUF reader (versions 2 and 3), the single-file format of llama.cpp.
//!
//! Layout, all little-endian:
//! ```text
//! "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count × { key: string | value_type u32 | value }
//! tensor_count × { name: string | n_dims u32 | dims u64[n_dims] | ggml_type u32 | offset u64 }
//! padding to `general.alignment` (default 32)
//! data section: each tensor at data_start + offset (offsets aligned)
//! string = len u64 | bytes (UTF-8, no terminator)
//! array  = element_type u32 | count u64 | count × value
//! ```
//! `dims` are in ggml order: `dims[0]` is the innermost (contiguous) axis, so
//! a matrix with `dims = [cols, rows]` is row-major `[rows][cols]`;
//! [`GgufTensorInfo::shape`] gives the usual outermost-first shape.
//!
//! The file is memory-mapped; parsing copies only metadata. Every count and
//! length read from the file is checked against the bytes that remain before
//! anything is allocated, so a corrupt or hostile file yields an error, never
//! a panic or a huge allocation.

use std::collections::HashMap;
use std::path::Path;

mod parse;
mod value;
mod writer;

pub use value::{GgufArray, GgufValue};
pub use writer::GgufBuilder;

use super::error::LoadError;
use super::mapped::FileBytes;
use super::quants::{self, GgmlType, Ternary};
use super::stream::{ByteSource, read_exact};
use crate::{Error, Result};
use parse::{Header, parse_header};

const MAGIC: &[u8; 4] = b"GGUF";
/// Default alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal but never nested deeply in real files; the cap
/// keeps a hostile file from exhausting the stack through recursion.
const MAX_ARRAY_DEPTH: u32 = 4;
/// An alignment larger than this is certainly corruption.
const MAX_ALIGNMENT: u64 = 1 << 20;

/// Where one tensor lives and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) axis.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
    /// Product of `dims`.
    pub n_elements: u64,
    /// Bytes the tensor occupies in the data section.
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// Outermost-first shape (the reverse of `dims`), as in PyTorch or
    /// safetensors: a GGUF `[cols, rows]` matrix is `[rows, cols]` here.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Error unless [`GgufTensorInfo::shape`] is exactly `expected`
    /// (outermost first).
    pub fn expect_shape(&self, expected: &[usize]) -> Result<()> {
        let found = self.shape();
        if found != expected {
            return Err(LoadError::WrongShape { tensor: self.name.clone(), expected: expected.to_vec(), found }.into());
        }
        Ok(())
    }
}

/// A parsed GGUF file: metadata in memory, tensor data mapped (or, for a
/// streamed file, not held at all: see [`Gguf::read_header`]).
pub struct Gguf {
    source: String,
    /// `None` when only the header was read; the data is read by range.
    storage: Option<FileBytes>,
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, GgufValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("source", &self.source)
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Gguf {
    /// Memory-map and parse a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::parse(path.display().to_string(), FileBytes::map(path)?)
    }

    /// Parse a GGUF image held in memory (tests, downloads, wasm).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::from_named_bytes("<memory>", bytes)
    }

    /// Parse a GGUF image held in memory; errors name it `name`.
    pub fn from_named_bytes(name: &str, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(name.to_string(), FileBytes::Owned(bytes))
    }

    /// Read and parse only the header (metadata and tensor table) of a
    /// streamed GGUF called `name`; tensors are then read by range at
    /// [`Gguf::data_start`] + their offset. The header's length is not
    /// stored in the file, so a prefix is read and grown until it parses,
    /// up to `max_header` bytes ([`MAX_STREAMED_HEADER`] is a good limit).
    pub async fn read_header(name: &str, source: &dyn ByteSource, max_header: u64) -> Result<Self> {
        let file_len = source.len();
        // Start small (tiny files stay unread past their header) and double:
        // real headers are a few MiB, mostly the vocabulary.
        let mut prefix = Vec::new();
        let mut want = file_len.min(64 << 10).min(max_header);
        loop {
            let what = "the GGUF header";
            let more = read_exact(source, name, what, prefix.len() as u64, want - prefix.len() as u64).await?;
            prefix.extend_from_slice(&more);
            match parse_header(&prefix, file_len) {
                Ok(header) => return Ok(Self::from_header(name.to_string(), None, header)),
                Err(LoadError::HeaderPastPrefix { needed_end, .. }) => {
                    if prefix.len() as u64 >= max_header {
                        let err = LoadError::TooLarge {
                            what: "the GGUF header (metadata and tensor table)".into(),
                            value: needed_end,
                            limit: max_header,
                        };
                        return Err(err.in_file(name).into());
                    }
                    want = needed_end.max(2 * prefix.len() as u64).min(file_len).min(max_header);
                }
                Err(err) => return Err(err.in_file(name).into()),
            }
        }
    }

    fn parse(source: String, storage: FileBytes) -> Result<Self> {
        let bytes = storage.bytes();
        let header = match parse_header(bytes, bytes.len() as u64) {
            Ok(header) => header,
            Err(err) => return Err(err.in_file(source).into()),
        };
        Ok(Self::from_header(source, Some(storage), header))
    }

    fn from_header(source: String, storage: Option<FileBytes>, header: Header) -> Self {
        let tensor_index = header.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        let metadata_index = header.metadata.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        Gguf {
            source,
            storage,
            version: header.version,
            alignment: header.alignment,
            data_start: header.data_start,
            metadata: header.metadata,
            metadata_index,
            tensors: header.tensors,
            tensor_index,
        }
    }

    /// The path it was opened from, or `<memory>`.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute file offset of the data section.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// All key/value pairs in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.metadata_index.contains_key(key)
    }

    fn require(&self, key: &str) -> Result<&GgufValue> {
        self.get(key).ok_or_else(|| LoadError::MissingKey { key: key.to_string() }.in_file(&self.source).into())
    }

    fn wrong_type(&self, key: &str, expected: &'static str, value: &GgufValue) -> Error {
        LoadError::WrongValueType { key: key.to_string(), expected, found: value.type_name() }
            .in_file(&self.source)
            .into()
    }

    /// A non-negative integer of any integer type.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let value = self.require(key)?;
        value.as_u64().ok_or_else(|| self.wrong_type(key, "non-negative integer", value))
    }

    /// Like [`Gguf::get_u64`], but Ok(None) when the key is absent.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.contains_key(key) {
            true => self.get_u64(key).map(Some),
            false => Ok(None),
        }
    }

    /// A non-negative integer that fits in u32.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let value = self.require(key)?;
        value
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| self.wrong_type(key, "integer in u32 range", value))
    }

    pub fn get_i64(&self, key: &str) -> Result<i64> {
        let value = self.require(key)?;
        value.as_i64().ok_or_else(|| self.wrong_type(key, "integer", value))
    }

    /// An f32 (or f64, narrowed).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let value = self.require(key)?;
        value.as_f32().ok_or_else(|| self.wrong_type(key, "float", value))
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.contains_key(key) {
            true => self.get_f32(key).map(Some),
            false => Ok(None),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let value = self.require(key)?;
        value.as_bool().ok_or_else(|| self.wrong_type(key, "bool", value))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let value = self.require(key)?;
        value.as_str().ok_or_else(|| self.wrong_type(key, "string", value))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.contains_key(key) {
            true => self.get_str(key).map(Some),
            false => Ok(None),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<&GgufArray> {
        let value = self.require(key)?;
        value.as_array().ok_or_else(|| self.wrong_type(key, "array", value))
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`, `.merges`).
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        let value = self.require(key)?;
        match value {
            GgufValue::Array(GgufArray::String(v)) => Ok(v),
            _ => Err(self.wrong_type(key, "array of strings", value)),
        }
    }

    /// An array of any integer type, widened (e.g. `tokenizer.ggml.token_type`).
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>> {
        let value = self.require(key)?;
        value.as_array().and_then(GgufArray::to_i64_vec).ok_or_else(|| self.wrong_type(key, "array of integers", value))
    }

    /// An array of f32 or f64 (e.g. `tokenizer.ggml.scores`).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let value = self.require(key)?;
        value.as_array().and_then(GgufArray::to_f32_vec).ok_or_else(|| self.wrong_type(key, "array of floats", value))
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensor_index.contains_key(name)
    }

    pub fn tensor_info(&self, name: &str) -> Result<&GgufTensorInfo> {
        match self.tensor_index.get(name) {
            Some(&i) => Ok(&self.tensors[i]),
            None => Err(LoadError::TensorNotFound { name: name.to_string(), searched: self.source.clone() }.into()),
        }
    }

    /// The raw bytes of a tensor, exactly `n_bytes` long (bounds were checked
    /// when the file was opened).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor_info(name)?;
        let Some(storage) = &self.storage else {
            return Err(Error::Invalid(format!(
                "{}: only the header was read; tensor '{name}' is read by range (GgufTensors over the read bytes)",
                self.source
            )));
        };
        let start = (self.data_start + info.offset) as usize;
        Ok(&storage.bytes()[start..start + info.n_bytes as usize])
    }

    /// A tensor's values as f32, dequantized if needed.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        decode_f32(self.tensor_info(name)?, self.tensor_bytes(name)?, &self.source)
    }

    /// A ternary tensor (TQ1_0, TQ2_0, I2_S) as i8 values in {-1, 0, 1}
    /// and its scale(s), for running natively as ternary.
    pub fn tensor_ternary(&self, name: &str) -> Result<Ternary> {
        decode_ternary(self.tensor_info(name)?, self.tensor_bytes(name)?, &self.source)
    }

    /// The absolute byte range `[start, end)` of a tensor's data in the file.
    pub fn tensor_range(&self, name: &str) -> Result<(u64, u64)> {
        let info = self.tensor_info(name)?;
        let start = self.data_start + info.offset;
        Ok((start, start + info.n_bytes))
    }
}

/// Tensors by name with their bytes: a whole GGUF, or the few tensors a
/// streamed load has read ([`ReadGgufTensors`]). The weight decoding is
/// written once against it.
pub trait GgufTensors {
    /// The file's name, for errors.
    fn source(&self) -> &str;

    fn tensor_info(&self, name: &str) -> Result<&GgufTensorInfo>;

    fn has_tensor(&self, name: &str) -> bool;

    fn tensor_bytes(&self, name: &str) -> Result<&[u8]>;

    /// A tensor's values as f32, dequantized if needed.
    fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        decode_f32(self.tensor_info(name)?, self.tensor_bytes(name)?, self.source())
    }

    /// A ternary tensor as values in {-1, 0, 1} and its scale(s).
    fn tensor_ternary(&self, name: &str) -> Result<Ternary> {
        decode_ternary(self.tensor_info(name)?, self.tensor_bytes(name)?, self.source())
    }
}

impl GgufTensors for Gguf {
    fn source(&self) -> &str {
        Gguf::source(self)
    }

    fn tensor_info(&self, name: &str) -> Result<&GgufTensorInfo> {
        Gguf::tensor_info(self, name)
    }

    fn has_tensor(&self, name: &str) -> bool {
        Gguf::has_tensor(self, name)
    }

    fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        Gguf::tensor_bytes(self, name)
    }
}

/// Tensors of a streamed GGUF (its header parsed by [`Gguf::read_header`])
/// whose bytes have been read, by name.
pub struct ReadGgufTensors<'a> {
    pub header: &'a Gguf,
    pub bytes: HashMap<String, Vec<u8>>,
}

impl GgufTensors for ReadGgufTensors<'_> {
    fn source(&self) -> &str {
        self.header.source()
    }

    fn tensor_info(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.header.tensor_info(name)
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.header.has_tensor(name)
    }

    fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        self.bytes.get(name).map(Vec::as_slice).ok_or_else(|| {
            Error::Invalid(format!("tensor '{name}' was not read before it was decoded (a bug in the streamed loader)"))
        })
    }
}

/// The largest GGUF header [`Gguf::read_header`] reads by default: real
/// headers (vocabulary, merges, tensor table) stay far below it.
pub const MAX_STREAMED_HEADER: u64 = 256 << 20;

/// A tensor's bytes (from the file `source`) as f32, dequantized if needed.
pub(crate) fn decode_f32(info: &GgufTensorInfo, bytes: &[u8], source: &str) -> Result<Vec<f32>> {
    quants::dequantize(info.ggml_type, bytes, info.n_elements as usize).map_err(|e| with_tensor(e, &info.name, source))
}

/// A ternary tensor's bytes (from the file `source`) as values and scales.
pub(crate) fn decode_ternary(info: &GgufTensorInfo, bytes: &[u8], source: &str) -> Result<Ternary> {
    quants::extract_ternary(info.ggml_type, bytes, info.n_elements as usize)
        .map_err(|e| with_tensor(e, &info.name, source))
}

fn with_tensor(err: Error, tensor: &str, source: &str) -> Error {
    match err {
        Error::Load(LoadError::Quant { message }) => {
            LoadError::Quant { message: format!("tensor '{tensor}': {message}") }.in_file(source).into()
        }
        other => other,
    }
}
