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

use super::error::LoadError;
use super::mapped::FileBytes;
use super::quants::{self, GgmlType, Ternary};
use super::stream::{ByteSource, read_exact};
use crate::{Error, Result};

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

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(GgufArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array; elements of one type, stored unboxed.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<GgufArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl GgufArray {
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(v) => v.len(),
            GgufArray::I8(v) => v.len(),
            GgufArray::U16(v) => v.len(),
            GgufArray::I16(v) => v.len(),
            GgufArray::U32(v) => v.len(),
            GgufArray::I32(v) => v.len(),
            GgufArray::F32(v) => v.len(),
            GgufArray::Bool(v) => v.len(),
            GgufArray::String(v) => v.len(),
            GgufArray::Array(v) => v.len(),
            GgufArray::U64(v) => v.len(),
            GgufArray::I64(v) => v.len(),
            GgufArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Name of the element type, as used in error messages.
    pub fn element_type_name(&self) -> &'static str {
        match self {
            GgufArray::U8(_) => "u8",
            GgufArray::I8(_) => "i8",
            GgufArray::U16(_) => "u16",
            GgufArray::I16(_) => "i16",
            GgufArray::U32(_) => "u32",
            GgufArray::I32(_) => "i32",
            GgufArray::F32(_) => "f32",
            GgufArray::Bool(_) => "bool",
            GgufArray::String(_) => "string",
            GgufArray::Array(_) => "array",
            GgufArray::U64(_) => "u64",
            GgufArray::I64(_) => "i64",
            GgufArray::F64(_) => "f64",
        }
    }

    /// Integer elements widened to i64 (None for non-integer arrays or u64
    /// values past i64::MAX).
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        Some(match self {
            GgufArray::U8(v) => v.iter().map(|&x| x as i64).collect(),
            GgufArray::I8(v) => v.iter().map(|&x| x as i64).collect(),
            GgufArray::U16(v) => v.iter().map(|&x| x as i64).collect(),
            GgufArray::I16(v) => v.iter().map(|&x| x as i64).collect(),
            GgufArray::U32(v) => v.iter().map(|&x| x as i64).collect(),
            GgufArray::I32(v) => v.iter().map(|&x| x as i64).collect(),
            GgufArray::I64(v) => v.clone(),
            GgufArray::U64(v) => {
                let mut out = Vec::with_capacity(v.len());
                for &x in v {
                    out.push(i64::try_from(x).ok()?);
                }
                out
            }
            _ => return None,
        })
    }

    /// Float elements as f32 (f64 narrowed).
    pub fn to_f32_vec(&self) -> Option<Vec<f32>> {
        match self {
            GgufArray::F32(v) => Some(v.clone()),
            GgufArray::F64(v) => Some(v.iter().map(|&x| x as f32).collect()),
            _ => None,
        }
    }
}

impl GgufValue {
    /// Name of the value type, as used in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::F32(_) => "f32",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F64(_) => "f64",
        }
    }

    /// Any integer type, if non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(x) => Some(x as u64),
            GgufValue::U16(x) => Some(x as u64),
            GgufValue::U32(x) => Some(x as u64),
            GgufValue::U64(x) => Some(x),
            GgufValue::I8(x) => u64::try_from(x).ok(),
            GgufValue::I16(x) => u64::try_from(x).ok(),
            GgufValue::I32(x) => u64::try_from(x).ok(),
            GgufValue::I64(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }

    /// Any integer type that fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U8(x) => Some(x as i64),
            GgufValue::U16(x) => Some(x as i64),
            GgufValue::U32(x) => Some(x as i64),
            GgufValue::U64(x) => i64::try_from(x).ok(),
            GgufValue::I8(x) => Some(x as i64),
            GgufValue::I16(x) => Some(x as i64),
            GgufValue::I32(x) => Some(x as i64),
            GgufValue::I64(x) => Some(x),
            _ => None,
        }
    }

    /// f32 or f64 (narrowed).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            GgufValue::F32(x) => Some(x),
            GgufValue::F64(x) => Some(x as f32),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(x) => Some(x),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

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

struct Header {
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<GgufTensorInfo>,
}

/// A bounds-checked cursor over the file image, or over a prefix of it
/// when the file is streamed (`buf` shorter than `file_len`).
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The whole file's length: counts and lengths are checked against it.
    file_len: u64,
}

impl<'a> Reader<'a> {
    /// Bytes left in the file (not only in the prefix held).
    fn remaining(&self) -> u64 {
        self.file_len.saturating_sub(self.pos as u64)
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], LoadError> {
        if n > self.remaining() {
            return Err(LoadError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                file_len: self.file_len,
            });
        }
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(LoadError::HeaderPastPrefix { prefix: self.buf.len() as u64, needed_end: self.pos as u64 + n });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], LoadError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, LoadError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, LoadError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, LoadError> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| LoadError::InvalidUtf8 { what: what() })
    }

    /// Fail before allocating when `count` elements of at least `min_size`
    /// bytes each cannot fit in what is left of the file.
    fn check_count(&self, count: u64, min_size: u64, what: &dyn Fn() -> String) -> Result<(), LoadError> {
        match count.checked_mul(min_size) {
            Some(bytes) if bytes <= self.remaining() => Ok(()),
            _ => Err(LoadError::CountTooLarge { what: what(), count, remaining: self.remaining() }),
        }
    }
}

/// Parse the header from `buf`, the first bytes of a file of `file_len`
/// bytes (all of it, or a prefix when streamed: then a header longer than
/// the prefix is [`LoadError::HeaderPastPrefix`]).
fn parse_header(buf: &[u8], file_len: u64) -> Result<Header, LoadError> {
    let mut r = Reader { buf, pos: 0, file_len };
    let magic = r.take(4, &|| "magic".into())?;
    if magic != MAGIC {
        return Err(LoadError::BadMagic { found: magic.to_vec() });
    }
    let version = r.u32(&|| "version".into())?;
    if !(2..=3).contains(&version) {
        return Err(LoadError::UnsupportedVersion { version });
    }
    let tensor_count = r.u64(&|| "tensor count".into())?;
    let kv_count = r.u64(&|| "metadata count".into())?;

    // Smallest encodings: a key/value is an empty key (8) + type (4) + a
    // 1-byte value; a tensor info is an empty name (8) + n_dims (4) + type
    // (4) + offset (8).
    r.check_count(kv_count, 13, &|| "metadata key count".into())?;
    let mut metadata = Vec::with_capacity(kv_count as usize);
    let mut seen_keys = std::collections::HashSet::new();
    for i in 0..kv_count {
        let key = r.string(&|| format!("key of metadata entry {i}"))?;
        let type_id = r.u32(&|| format!("value type of '{key}'"))?;
        let value = read_value(&mut r, type_id, &key, 0)?;
        if !seen_keys.insert(key.clone()) {
            return Err(LoadError::Duplicate { what: "metadata key", name: key });
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, value)) => {
            let a = value.as_u64().ok_or_else(|| LoadError::WrongValueType {
                key: "general.alignment".into(),
                expected: "unsigned integer",
                found: value.type_name(),
            })?;
            if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                return Err(LoadError::TooLarge {
                    what: "general.alignment (must be a power of two)".into(),
                    value: a,
                    limit: MAX_ALIGNMENT,
                });
            }
            a
        }
    };

    r.check_count(tensor_count, 24, &|| "tensor count".into())?;
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut raw_types = Vec::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let name = r.string(&|| format!("name of tensor {i}"))?;
        let n_dims = r.u32(&|| format!("dimension count of tensor '{name}'"))?;
        if n_dims > MAX_DIMS {
            return Err(LoadError::BadShape {
                tensor: name,
                message: format!("{n_dims} dimensions, ggml allows at most {MAX_DIMS}"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(r.u64(&|| format!("dimension {d} of tensor '{name}'"))?);
        }
        let type_id = r.u32(&|| format!("type of tensor '{name}'"))?;
        let offset = r.u64(&|| format!("data offset of tensor '{name}'"))?;
        raw_types.push(type_id);
        tensors.push((name, dims, offset));
    }

    let header_end = r.pos as u64;
    let data_start = header_end.div_ceil(alignment) * alignment;
    let data_len = file_len.saturating_sub(data_start);

    let mut infos: Vec<GgufTensorInfo> = Vec::with_capacity(tensors.len());
    let mut names = std::collections::HashSet::new();
    for ((name, dims, offset), type_id) in tensors.into_iter().zip(raw_types) {
        let ggml_type =
            GgmlType::from_id(type_id).ok_or_else(|| LoadError::UnknownTensorType { tensor: name.clone(), type_id })?;
        let n_elements =
            dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= isize::MAX as u64).ok_or_else(
                || LoadError::BadShape {
                    tensor: name.clone(),
                    message: format!("dimensions {dims:?} overflow the element count"),
                },
            )?;
        let n_bytes =
            ggml_type.tensor_bytes(&dims).map_err(|message| LoadError::BadShape { tensor: name.clone(), message })?;
        if offset % alignment != 0 {
            return Err(LoadError::TensorMisaligned { tensor: name, offset, alignment });
        }
        match offset.checked_add(n_bytes) {
            Some(end) if end <= data_len => {}
            _ => {
                return Err(LoadError::TensorOutOfBounds {
                    tensor: name,
                    start: offset,
                    end: offset.saturating_add(n_bytes),
                    data_len,
                });
            }
        }
        if !names.insert(name.clone()) {
            return Err(LoadError::Duplicate { what: "tensor", name });
        }
        infos.push(GgufTensorInfo { name, dims, ggml_type, offset, n_elements, n_bytes });
    }

    let mut by_offset: Vec<&GgufTensorInfo> = infos.iter().filter(|t| t.n_bytes > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        if pair[0].offset + pair[0].n_bytes > pair[1].offset {
            return Err(LoadError::TensorOverlap { first: pair[0].name.clone(), second: pair[1].name.clone() });
        }
    }

    Ok(Header { version, alignment, data_start, metadata, tensors: infos })
}

fn read_value(r: &mut Reader, type_id: u32, key: &str, depth: u32) -> Result<GgufValue, LoadError> {
    let what = || format!("value of '{key}'");
    Ok(match type_id {
        0 => GgufValue::U8(r.array::<1>(&what)?[0]),
        1 => GgufValue::I8(r.array::<1>(&what)?[0] as i8),
        2 => GgufValue::U16(u16::from_le_bytes(r.array(&what)?)),
        3 => GgufValue::I16(i16::from_le_bytes(r.array(&what)?)),
        4 => GgufValue::U32(u32::from_le_bytes(r.array(&what)?)),
        5 => GgufValue::I32(i32::from_le_bytes(r.array(&what)?)),
        6 => GgufValue::F32(f32::from_le_bytes(r.array(&what)?)),
        7 => GgufValue::Bool(read_bool(r, key)?),
        8 => GgufValue::String(r.string(&what)?),
        9 => GgufValue::Array(read_array(r, key, depth)?),
        10 => GgufValue::U64(u64::from_le_bytes(r.array(&what)?)),
        11 => GgufValue::I64(i64::from_le_bytes(r.array(&what)?)),
        12 => GgufValue::F64(f64::from_le_bytes(r.array(&what)?)),
        _ => {
            return Err(LoadError::UnknownValueType { key: key.to_string(), type_id });
        }
    })
}

fn read_bool(r: &mut Reader, key: &str) -> Result<bool, LoadError> {
    match r.array::<1>(&|| format!("value of '{key}'"))?[0] {
        0 => Ok(false),
        1 => Ok(true),
        _ => {
            Err(LoadError::WrongValueType { key: key.to_string(), expected: "bool (byte 0 or 1)", found: "other byte" })
        }
    }
}

fn read_array(r: &mut Reader, key: &str, depth: u32) -> Result<GgufArray, LoadError> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(LoadError::TooLarge {
            what: format!("array nesting depth of '{key}'"),
            value: depth as u64 + 1,
            limit: MAX_ARRAY_DEPTH as u64,
        });
    }
    let element_type = r.u32(&|| format!("array element type of '{key}'"))?;
    let count = r.u64(&|| format!("array length of '{key}'"))?;
    let min_size = match element_type {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        10..=12 => 8,
        _ => {
            return Err(LoadError::UnknownValueType { key: key.to_string(), type_id: element_type });
        }
    };
    r.check_count(count, min_size, &|| format!("array length of '{key}'"))?;
    let n = count as usize;
    let what = || format!("array '{key}'");

    macro_rules! fixed {
        ($variant:ident, $ty:ty) => {{
            let bytes = r.take(count * min_size, &what)?;
            GgufArray::$variant(
                bytes
                    .chunks_exact(std::mem::size_of::<$ty>())
                    .map(|c| <$ty>::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        }};
    }

    Ok(match element_type {
        0 => fixed!(U8, u8),
        1 => fixed!(I8, i8),
        2 => fixed!(U16, u16),
        3 => fixed!(I16, i16),
        4 => fixed!(U32, u32),
        5 => fixed!(I32, i32),
        6 => fixed!(F32, f32),
        10 => fixed!(U64, u64),
        11 => fixed!(I64, i64),
        12 => fixed!(F64, f64),
        7 => {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(read_bool(r, key)?);
            }
            GgufArray::Bool(out)
        }
        8 => {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(r.string(&|| format!("string {i} of array '{key}'"))?);
            }
            GgufArray::String(out)
        }
        9 => {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(read_array(r, key, depth + 1)?);
            }
            GgufArray::Array(out)
        }
        _ => unreachable!("element type checked above"),
    })
}

/// Writes GGUF images; used by tests and fixture builders to make small
/// files (the reader's counterpart, kept minimal).
#[derive(Default)]
pub struct GgufBuilder {
    alignment: Option<u64>,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl GgufBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a metadata pair (`general.alignment`, if given as U32, also sets
    /// the data alignment).
    pub fn metadata(mut self, key: &str, value: GgufValue) -> Self {
        if key == "general.alignment" {
            self.alignment = value.as_u64();
        }
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Add a tensor; `dims` in ggml order (innermost first), `data` the
    /// already-encoded bytes.
    pub fn tensor(mut self, name: &str, dims: &[u64], ggml_type: GgmlType, data: Vec<u8>) -> Self {
        self.tensors.push((name.to_string(), dims.to_vec(), ggml_type, data));
        self
    }

    /// Serialize as GGUF v3. The image ends right after the last tensor's
    /// bytes (no trailing padding), so every shorter prefix is truncated.
    pub fn build(&self) -> Vec<u8> {
        let alignment = self.alignment.unwrap_or(DEFAULT_ALIGNMENT).max(1);
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_string(&mut out, key);
            out.extend_from_slice(&value_type_id(value).to_le_bytes());
            write_value(&mut out, value);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ggml_type, data) in &self.tensors {
            write_string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ggml_type.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(alignment) * alignment;
        }
        let data_start = (out.len() as u64).div_ceil(alignment) * alignment;
        out.resize(data_start as usize, 0);
        for ((_, _, _, data), offset) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + offset) as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value_type_id(value: &GgufValue) -> u32 {
    match value {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

fn array_type_id(array: &GgufArray) -> u32 {
    match array {
        GgufArray::U8(_) => 0,
        GgufArray::I8(_) => 1,
        GgufArray::U16(_) => 2,
        GgufArray::I16(_) => 3,
        GgufArray::U32(_) => 4,
        GgufArray::I32(_) => 5,
        GgufArray::F32(_) => 6,
        GgufArray::Bool(_) => 7,
        GgufArray::String(_) => 8,
        GgufArray::Array(_) => 9,
        GgufArray::U64(_) => 10,
        GgufArray::I64(_) => 11,
        GgufArray::F64(_) => 12,
    }
}

fn write_value(out: &mut Vec<u8>, value: &GgufValue) {
    match value {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(*x as u8),
        GgufValue::String(s) => write_string(out, s),
        GgufValue::Array(a) => write_array(out, a),
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn write_array(out: &mut Vec<u8>, array: &GgufArray) {
    out.extend_from_slice(&array_type_id(array).to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    match array {
        GgufArray::U8(v) => out.extend_from_slice(v),
        GgufArray::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        GgufArray::U16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::I16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::U32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::Bool(v) => out.extend(v.iter().map(|&x| x as u8)),
        GgufArray::String(v) => v.iter().for_each(|s| write_string(out, s)),
        GgufArray::Array(v) => v.iter().for_each(|a| write_array(out, a)),
        GgufArray::U64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgufArray::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
}
