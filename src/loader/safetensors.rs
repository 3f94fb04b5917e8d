//! safetensors checkpoints: one file, or shards listed by
//! `model.safetensors.index.json` (`{"weight_map": {tensor: file}}`).
//!
//! A safetensors file is `header_len u64 | JSON header | data`; the header
//! maps each tensor name to dtype, shape (outermost first) and a byte range
//! of the data. Files are memory-mapped and validated when opened (the
//! `safetensors` crate checks that ranges tile the data exactly); lookups
//! then hand out borrowed byte slices.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use ::safetensors::Dtype;

use super::error::LoadError;
use super::mapped::FileBytes;
use super::stream::{ByteSource, read_exact};
use crate::{Error, Result};

/// The index file name the hub uses for sharded checkpoints.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The file name of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

struct TensorEntry {
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: usize,
    end: usize,
}

struct Shard {
    path: String,
    bytes: FileBytes,
    tensors: HashMap<String, TensorEntry>,
}

/// One checkpoint: every tensor of every shard, by name.
pub struct SafeTensors {
    shards: Vec<Shard>,
    /// Tensor name → shard index.
    location: HashMap<String, usize>,
}

impl std::fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeTensors").field("files", &self.files()).field("tensors", &self.location.len()).finish()
    }
}

/// A borrowed tensor: dtype, shape and raw little-endian bytes.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    name: &'a str,
    file: &'a str,
    dtype: Dtype,
    shape: &'a [usize],
    data: &'a [u8],
}

impl SafeTensors {
    /// Open a checkpoint from a `.safetensors` file, an index `.json`, or a
    /// directory holding `model.safetensors.index.json` or
    /// `model.safetensors`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            let index = path.join(INDEX_FILE);
            let single = path.join(SINGLE_FILE);
            if index.is_file() {
                return Self::open_index(index);
            }
            if single.is_file() {
                return Self::open_files(&[single]);
            }
            return Err(LoadError::NoCheckpoint { dir: path.display().to_string() }.into());
        }
        if path.extension().is_some_and(|e| e == "json") {
            return Self::open_index(path);
        }
        Self::open_files(&[path.to_path_buf()])
    }

    /// Open the shards named by an index file (paths relative to it) and
    /// check that each tensor is where the index says.
    pub fn open_index(index_path: impl AsRef<Path>) -> Result<Self> {
        let index_path = index_path.as_ref();
        let shown = index_path.display().to_string();
        let text = std::fs::read_to_string(index_path).map_err(|source| Error::Io { path: shown.clone(), source })?;
        let weight_map = parse_index(&text).map_err(|e| e.in_file(&shown))?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut files: Vec<String> = weight_map.values().cloned().collect();
        files.sort();
        files.dedup();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        let checkpoint = Self::open_files(&paths)?;
        for (tensor, file) in &weight_map {
            let shard = match checkpoint.location.get(tensor) {
                Some(&s) => &checkpoint.shards[s],
                None => {
                    return Err(LoadError::TensorNotFound {
                        name: tensor.clone(),
                        searched: format!("{} (named by {shown})", dir.join(file).display()),
                    }
                    .into());
                }
            };
            if shard.path != dir.join(file).display().to_string() {
                return Err(LoadError::Safetensors {
                    message: format!("{shown} puts tensor '{tensor}' in {file}, but it is in {}", shard.path),
                }
                .into());
            }
        }
        Ok(checkpoint)
    }

    /// Open a set of files as one checkpoint; a tensor name may appear in
    /// only one of them.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::with_capacity(paths.len());
        for path in paths {
            shards.push((path.display().to_string(), FileBytes::map(path)?));
        }
        Self::from_shards(shards)
    }

    /// A checkpoint held in memory, one `(name, bytes)` per shard.
    pub fn from_bytes(shards: Vec<(String, Vec<u8>)>) -> Result<Self> {
        Self::from_shards(shards.into_iter().map(|(name, bytes)| (name, FileBytes::Owned(bytes))).collect())
    }

    fn from_shards(files: Vec<(String, FileBytes)>) -> Result<Self> {
        let mut shards: Vec<Shard> = Vec::with_capacity(files.len());
        for (path, bytes) in files {
            let tensors = parse_header(bytes.bytes()).map_err(|e| e.in_file(&path))?;
            shards.push(Shard { path, bytes, tensors });
        }
        let location = locate(shards.iter().map(|s| (s.path.as_str(), &s.tensors)))?;
        Ok(SafeTensors { shards, location })
    }

    /// The files of this checkpoint.
    pub fn files(&self) -> Vec<&str> {
        self.shards.iter().map(|s| s.path.as_str()).collect()
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.location.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn len(&self) -> usize {
        self.location.len()
    }

    pub fn is_empty(&self) -> bool {
        self.location.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// The tensor, or None if no shard has it.
    pub fn get(&self, name: &str) -> Option<TensorView<'_>> {
        let shard = &self.shards[*self.location.get(name)?];
        let (key, entry) = shard.tensors.get_key_value(name)?;
        Some(TensorView {
            name: key,
            file: &shard.path,
            dtype: entry.dtype,
            shape: &entry.shape,
            data: &shard.bytes.bytes()[entry.start..entry.end],
        })
    }

    /// The tensor, or an error naming it and the files searched.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        self.get(name).ok_or_else(|| {
            LoadError::TensorNotFound { name: name.to_string(), searched: self.files().join(", ") }.into()
        })
    }

    /// Shortcut: the tensor, checked against `shape`, as f32.
    pub fn f32_with_shape(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        TensorLookup::f32_with_shape(self, name, shape)
    }
}

/// Tensors by name: a whole checkpoint, or the few a streamed load has
/// read ([`ReadTensors`]). The weight decoding is written once against it.
pub trait TensorLookup {
    /// The tensor, or an error naming it and the files searched.
    fn tensor(&self, name: &str) -> Result<TensorView<'_>>;

    fn contains(&self, name: &str) -> bool;

    /// The tensor, checked against `shape`, as f32.
    fn f32_with_shape(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let view = self.tensor(name)?;
        view.expect_shape(shape)?;
        view.to_f32()
    }
}

impl TensorLookup for SafeTensors {
    fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        SafeTensors::tensor(self, name)
    }

    fn contains(&self, name: &str) -> bool {
        SafeTensors::contains(self, name)
    }
}

/// Tensor name → shard, refusing a name that two shards hold.
fn locate<'a>(
    shards: impl Iterator<Item = (&'a str, &'a HashMap<String, TensorEntry>)>,
) -> Result<HashMap<String, usize>> {
    let mut location: HashMap<String, usize> = HashMap::new();
    let mut paths: Vec<&str> = Vec::new();
    for (index, (path, tensors)) in shards.enumerate() {
        for name in tensors.keys() {
            if let Some(&other) = location.get(name) {
                return Err(LoadError::Duplicate {
                    what: "tensor (in two shards)",
                    name: format!("{name}' in {} and '{path}", paths[other]),
                }
                .into());
            }
            location.insert(name.clone(), index);
        }
        paths.push(path);
    }
    Ok(location)
}

/// The headers of a streamed checkpoint's shards: every tensor's dtype,
/// shape and byte range, without the data (read by range, per layer).
pub struct SafetensorsHeaders {
    /// Per shard: its file name and its tensors.
    shards: Vec<(String, HashMap<String, TensorEntry>)>,
    location: HashMap<String, usize>,
}

impl SafetensorsHeaders {
    /// Read the header of each `(file name, source)` shard.
    pub async fn read(shards: &[(String, &dyn ByteSource)]) -> Result<Self> {
        let mut headers = Vec::with_capacity(shards.len());
        for (path, source) in shards {
            let file_len = source.len();
            let len_bytes = read_exact(*source, path, "the 8-byte header length", 0, 8.min(file_len)).await?;
            let header_len = header_len(&len_bytes, file_len).map_err(|e| e.in_file(path))?;
            let json = read_exact(*source, path, "the JSON header", 8, header_len as u64).await?;
            let tensors = parse_header_json(&json, file_len).map_err(|e| e.in_file(path))?;
            headers.push((path.clone(), tensors));
        }
        let location = locate(headers.iter().map(|(path, tensors)| (path.as_str(), tensors)))?;
        Ok(SafetensorsHeaders { shards: headers, location })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.location.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Where a tensor lies: its shard's index and its absolute byte range `[start, end)`.
    pub fn tensor_range(&self, name: &str) -> Result<(usize, u64, u64)> {
        let (shard, entry) = self.entry(name)?;
        Ok((shard, entry.start as u64, entry.end as u64))
    }

    fn entry(&self, name: &str) -> Result<(usize, &TensorEntry)> {
        let not_found = || -> Error {
            let files: Vec<&str> = self.shards.iter().map(|(p, _)| p.as_str()).collect();
            LoadError::TensorNotFound { name: name.to_string(), searched: files.join(", ") }.into()
        };
        let &shard = self.location.get(name).ok_or_else(not_found)?;
        Ok((shard, self.shards[shard].1.get(name).ok_or_else(not_found)?))
    }
}

/// Tensors of a streamed checkpoint whose bytes have been read, by name.
pub struct ReadTensors<'a> {
    pub headers: &'a SafetensorsHeaders,
    pub bytes: HashMap<String, Vec<u8>>,
}

impl TensorLookup for ReadTensors<'_> {
    fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let (shard, entry) = self.headers.entry(name)?;
        let (key, data) = self.bytes.get_key_value(name).ok_or_else(|| {
            Error::Invalid(format!("tensor '{name}' was not read before it was decoded (a bug in the streamed loader)"))
        })?;
        Ok(TensorView { name: key, file: &self.headers.shards[shard].0, dtype: entry.dtype, shape: &entry.shape, data })
    }

    fn contains(&self, name: &str) -> bool {
        self.headers.contains(name)
    }
}

fn parse_index(text: &str) -> Result<HashMap<String, String>, LoadError> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let index: Index = serde_json::from_str(text).map_err(|e| LoadError::Json {
        what: "safetensors index (expected {\"weight_map\": {tensor: file}})".into(),
        message: e.to_string(),
    })?;
    for file in index.weight_map.values() {
        // Shards live beside the index; anything else is suspicious.
        if file.contains("..") || Path::new(file).is_absolute() {
            return Err(LoadError::Safetensors {
                message: format!("index names shard '{file}' outside its directory"),
            });
        }
    }
    Ok(index.weight_map)
}

fn parse_header(bytes: &[u8]) -> Result<HashMap<String, TensorEntry>, LoadError> {
    let file_len = bytes.len() as u64;
    let header_len = header_len(&bytes[..8.min(bytes.len())], file_len)?;
    parse_header_json(&bytes[8..8 + header_len], file_len)
}

/// The JSON header's length from the file's first 8 bytes, checked against
/// the file's length.
fn header_len(first: &[u8], file_len: u64) -> Result<usize, LoadError> {
    let describe = |e| LoadError::Safetensors { message: describe(e, file_len) };
    let first: [u8; 8] = first.try_into().map_err(|_| describe(::safetensors::SafeTensorError::HeaderTooSmall))?;
    let n = u64::from_le_bytes(first);
    if n > MAX_HEADER_BYTES {
        return Err(describe(::safetensors::SafeTensorError::HeaderTooLarge));
    }
    if n > file_len - 8 {
        return Err(describe(::safetensors::SafeTensorError::InvalidHeaderLength));
    }
    Ok(n as usize)
}

/// The tensors of a JSON header (the `safetensors` crate checks that their
/// ranges tile the data and match dtype and shape), checked to end where a
/// file of `file_len` bytes ends.
fn parse_header_json(json: &[u8], file_len: u64) -> Result<HashMap<String, TensorEntry>, LoadError> {
    let metadata: ::safetensors::tensor::Metadata = serde_json::from_slice(json)
        .map_err(|e| LoadError::Safetensors { message: format!("the JSON header is invalid: {e}") })?;
    let data_start = 8 + json.len();
    if (data_start + metadata.data_len()) as u64 != file_len {
        return Err(LoadError::Safetensors {
            message: describe(::safetensors::SafeTensorError::MetadataIncompleteBuffer, file_len),
        });
    }
    Ok(metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let entry = TensorEntry {
                dtype: info.dtype,
                shape: info.shape.clone(),
                start: data_start + info.data_offsets.0,
                end: data_start + info.data_offsets.1,
            };
            (name, entry)
        })
        .collect())
}

/// The `safetensors` crate's limit on the JSON header.
const MAX_HEADER_BYTES: u64 = 100_000_000;

fn describe(err: ::safetensors::SafeTensorError, file_len: u64) -> String {
    use ::safetensors::SafeTensorError as E;
    match err {
        E::HeaderTooSmall => {
            format!("only {file_len} bytes, too short for the 8-byte header length")
        }
        E::InvalidHeaderLength => "the header length points past the end of the file (truncated download?)".into(),
        E::MetadataIncompleteBuffer => {
            "the tensor data does not end where the file ends (truncated or padded file)".into()
        }
        other => format!("{other:?}"),
    }
}

impl<'a> TensorView<'a> {
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The file the tensor lives in.
    pub fn file(&self) -> &'a str {
        self.file
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Outermost first, as in PyTorch.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Raw little-endian bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Error unless the shape is exactly `expected`.
    pub fn expect_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape != expected {
            return Err(LoadError::WrongShape {
                tensor: format!("{} (in {})", self.name, self.file),
                expected: expected.to_vec(),
                found: self.shape.to_vec(),
            }
            .into());
        }
        Ok(())
    }

    /// Error unless the dtype is `expected`.
    pub fn expect_dtype(&self, expected: Dtype) -> Result<()> {
        if self.dtype != expected {
            return Err(self.wrong_dtype(&format!("{expected:?}")));
        }
        Ok(())
    }

    fn wrong_dtype(&self, expected: &str) -> Error {
        LoadError::WrongDtype {
            tensor: format!("{} (in {})", self.name, self.file),
            expected: expected.to_string(),
            found: format!("{:?}", self.dtype),
        }
        .into()
    }

    /// The bytes of a U8 tensor (e.g. BitNet's packed ternary weights).
    pub fn as_u8(&self) -> Result<&'a [u8]> {
        self.expect_dtype(Dtype::U8)?;
        Ok(self.data)
    }

    /// The values of an I8 tensor.
    pub fn as_i8(&self) -> Result<&'a [i8]> {
        self.expect_dtype(Dtype::I8)?;
        Ok(bytemuck::cast_slice(self.data))
    }

    /// Values converted to f32: exact for F32, F16, BF16 and integers up to
    /// 24 bits; F64 and wider integers are rounded.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let d = self.data;
        fn each<const N: usize>(d: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
            d.chunks_exact(N).map(|c| f(c.try_into().expect("chunks_exact gives N bytes"))).collect()
        }
        Ok(match self.dtype {
            Dtype::F32 => each(d, f32::from_le_bytes),
            Dtype::F16 => each(d, |b| half::f16::from_le_bytes(b).to_f32()),
            Dtype::BF16 => each(d, |b| half::bf16::from_le_bytes(b).to_f32()),
            Dtype::F64 => each(d, |b| f64::from_le_bytes(b) as f32),
            Dtype::U8 => d.iter().map(|&x| x as f32).collect(),
            Dtype::I8 => d.iter().map(|&x| x as i8 as f32).collect(),
            Dtype::BOOL => d.iter().map(|&x| (x != 0) as u8 as f32).collect(),
            Dtype::I16 => each(d, |b| i16::from_le_bytes(b) as f32),
            Dtype::U16 => each(d, |b| u16::from_le_bytes(b) as f32),
            Dtype::I32 => each(d, |b| i32::from_le_bytes(b) as f32),
            Dtype::U32 => each(d, |b| u32::from_le_bytes(b) as f32),
            Dtype::I64 => each(d, |b| i64::from_le_bytes(b) as f32),
            Dtype::U64 => each(d, |b| u64::from_le_bytes(b) as f32),
            _ => return Err(self.wrong_dtype("a float or integer dtype convertible to f32")),
        })
    }
}
