//! The GGUF header parser: a bounds-checked cursor over the file image (or
//! a prefix of it, when streamed) that checks every count and length against
//! the bytes left before allocating anything.

use super::{DEFAULT_ALIGNMENT, GgufArray, GgufTensorInfo, GgufValue, MAGIC, MAX_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS};
use crate::loader::error::LoadError;
use crate::loader::quants::GgmlType;

pub(super) struct Header {
    pub version: u32,
    pub alignment: u64,
    pub data_start: u64,
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<GgufTensorInfo>,
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
pub(super) fn parse_header(buf: &[u8], file_len: u64) -> Result<Header, LoadError> {
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
