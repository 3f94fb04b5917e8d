//! GGUF parsing: the committed gguf-py fixture, every malformed-input class
//! named in the loader's contract, truncation at every byte and seeded
//! random corruption.

use deltallm::loader::quants::I2_S_TAIL;
use deltallm::loader::{GgmlType, Gguf, GgufArray, GgufBuilder, GgufValue, LoadError};
use rand::Rng;

use super::{data_path, load_err, rng};

#[test]
fn fixture_metadata_has_every_value_type() {
    let g = Gguf::open(data_path("quants.gguf")).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_start() % 64, 0);
    assert_eq!(g.get_str("general.architecture").unwrap(), "quanttest");
    assert_eq!(g.get("test.u8"), Some(&GgufValue::U8(200)));
    assert_eq!(g.get("test.i8"), Some(&GgufValue::I8(-100)));
    assert_eq!(g.get("test.u16"), Some(&GgufValue::U16(60000)));
    assert_eq!(g.get("test.i16"), Some(&GgufValue::I16(-30000)));
    assert_eq!(g.get_u32("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(g.get_i64("test.i32").unwrap(), -2_000_000_000);
    assert_eq!(g.get_f32("test.f32").unwrap(), 0.15625);
    assert!(g.get_bool("test.bool").unwrap());
    assert_eq!(g.get_str("test.string").unwrap(), "héllo ✓");
    assert_eq!(g.get_u64("test.u64").unwrap(), (1u64 << 63) + 5);
    assert_eq!(g.get_i64("test.i64").unwrap(), -(1i64 << 62));
    assert_eq!(g.get("test.f64"), Some(&GgufValue::F64(1e-300)));
    assert_eq!(g.get_str_array("test.strings").unwrap(), ["<s>", "Ġthe", "", "✓"]);
    assert_eq!(g.get_i64_array("test.ints").unwrap(), [1, -2, 3]);
    assert_eq!(g.get_f32_array("test.floats").unwrap(), [0.5, -1.25]);
    match g.get_array("test.nested").unwrap() {
        GgufArray::Array(inner) => {
            assert_eq!(inner.len(), 2);
            assert_eq!(inner[0].to_i64_vec().unwrap(), [1, 2]);
            assert_eq!(inner[1].to_i64_vec().unwrap(), [3]);
        }
        other => panic!("nested array read as {other:?}"),
    }
}

#[test]
fn fixture_tensor_table() {
    let g = Gguf::open(data_path("quants.gguf")).unwrap();
    assert_eq!(g.tensors().len(), 15);
    let q4k = g.tensor_info("q4_k_raw").unwrap();
    assert_eq!(q4k.ggml_type, GgmlType::Q4_K);
    assert_eq!(q4k.dims, [512, 1]);
    assert_eq!(q4k.shape(), [1, 512]);
    assert_eq!(q4k.n_bytes, 2 * 144);
    assert_eq!(g.tensor_bytes("q4_k_raw").unwrap().len(), 288);
    let f32_info = g.tensor_info("f32").unwrap();
    assert_eq!(f32_info.shape(), [2, 40]);
    f32_info.expect_shape(&[2, 40]).unwrap();
    let message = f32_info.expect_shape(&[40, 2]).unwrap_err().to_string();
    assert!(message.contains("'f32'") && message.contains("[2, 40]"), "{message}");
    for t in g.tensors() {
        assert_eq!(t.offset % 64, 0, "{} misaligned", t.name);
    }
}

#[test]
fn metadata_getters_check_types_and_presence() {
    let g = Gguf::open(data_path("quants.gguf")).unwrap();
    match load_err(g.get_str("test.u8")) {
        LoadError::WrongValueType { key, expected, found } => {
            assert_eq!((key.as_str(), expected, found), ("test.u8", "string", "u8"));
        }
        other => panic!("{other}"),
    }
    assert!(matches!(load_err(g.get_u32("test.u64")), LoadError::WrongValueType { .. }));
    assert!(matches!(load_err(g.get_u64("test.i8")), LoadError::WrongValueType { .. }));
    assert!(matches!(load_err(g.get_str_array("test.ints")), LoadError::WrongValueType { .. }));
    let missing = g.get_f32("llama.rope.freq_base").unwrap_err().to_string();
    assert!(missing.contains("llama.rope.freq_base"), "{missing}");
    assert_eq!(g.opt_u64("nope").unwrap(), None);
    let not_found = g.tensor_bytes("output.weight").unwrap_err().to_string();
    assert!(not_found.contains("output.weight") && not_found.contains("quants.gguf"), "{not_found}");
}

/// A small file with every value type and three tensor types.
fn sample_file() -> Vec<u8> {
    let mut i2s = vec![0x55u8; 64]; // all codes 1 → zeros
    i2s.extend_from_slice(&0.5f32.to_le_bytes());
    i2s.resize(64 + I2_S_TAIL, 0);
    let f32_data: Vec<u8> = (0..8).flat_map(|i| (i as f32 * 0.25).to_le_bytes()).collect();
    let mut q8 = vec![0u8; 34];
    q8[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
    for (j, b) in q8[2..].iter_mut().enumerate() {
        *b = (j as i8 - 16) as u8;
    }
    GgufBuilder::new()
        .metadata("general.architecture", GgufValue::String("llama".into()))
        .metadata("a.u8", GgufValue::U8(7))
        .metadata("a.i16", GgufValue::I16(-7))
        .metadata("a.f64", GgufValue::F64(2.5))
        .metadata("a.bool", GgufValue::Bool(false))
        .metadata(
            "tokenizer.ggml.tokens",
            GgufValue::Array(GgufArray::String(vec!["a".into(), "bc".into(), "".into()])),
        )
        .metadata(
            "a.nested",
            GgufValue::Array(GgufArray::Array(vec![GgufArray::U32(vec![1, 2]), GgufArray::Bool(vec![true])])),
        )
        .tensor("t.f32", &[4, 2], GgmlType::F32, f32_data)
        .tensor("t.q8", &[32], GgmlType::Q8_0, q8)
        .tensor("t.i2s", &[128, 2], GgmlType::I2_S, i2s)
        .build()
}

#[test]
fn builder_round_trip() {
    let g = Gguf::from_bytes(sample_file()).unwrap();
    assert_eq!(g.get_str_array("tokenizer.ggml.tokens").unwrap(), ["a", "bc", ""]);
    assert_eq!(g.tensor_f32("t.f32").unwrap(), [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]);
    let q8 = g.tensor_f32("t.q8").unwrap();
    assert_eq!(q8[0], -8.0);
    assert_eq!(q8[31], 7.5);
    let t = g.tensor_ternary("t.i2s").unwrap();
    assert!(t.values.iter().all(|&v| v == 0));
    assert_eq!(t.scales, [0.5]);
}

#[test]
fn every_truncation_is_an_error() {
    let file = sample_file();
    assert!(Gguf::from_bytes(file.clone()).is_ok());
    for len in 0..file.len() {
        let err = Gguf::from_bytes(file[..len].to_vec()).expect_err(&format!("prefix of {len} bytes parsed"));
        let message = err.to_string();
        assert!(!message.is_empty());
    }
    // The gguf-py fixture pads after its last tensor; every cut before the
    // end of the last tensor's data must fail.
    let fixture = std::fs::read(data_path("quants.gguf")).unwrap();
    let g = Gguf::from_bytes(fixture.clone()).unwrap();
    let end = g.tensors().iter().map(|t| g.data_start() + t.offset + t.n_bytes).max().unwrap() as usize;
    for len in 0..end {
        assert!(Gguf::from_bytes(fixture[..len].to_vec()).is_err(), "fixture prefix {len}");
    }
}

#[test]
fn truncation_message_says_what_and_where() {
    let file = sample_file();
    for len in [30, 100, file.len() - 1] {
        let message = Gguf::from_bytes(file[..len].to_vec()).unwrap_err().to_string();
        assert!(message.contains("truncated") && message.contains("<memory>"), "{message}");
    }
}

/// Exercise every accessor of a parsed file; none may panic.
fn touch_everything(g: &Gguf) {
    for (key, value) in g.metadata() {
        let _ = (g.get_u64(key), g.get_f32(key), g.get_str(key), g.get_str_array(key));
        let _ = (g.get_i64_array(key), g.get_f32_array(key), value.type_name());
    }
    for t in g.tensors() {
        let _ = g.tensor_bytes(&t.name).unwrap();
        let _ = g.tensor_f32(&t.name);
        let _ = g.tensor_ternary(&t.name);
    }
}

#[test]
fn random_corruption_never_panics() {
    let mut rng = rng(7);
    let originals = [sample_file(), std::fs::read(data_path("quants.gguf")).unwrap()];
    let mut parsed = 0;
    for trial in 0..4000 {
        let mut file = originals[trial % 2].clone();
        // Most structure lives in the header: aim three quarters of the
        // flips there.
        let header_len = if trial % 2 == 0 { 400 } else { 900 }.min(file.len());
        for _ in 0..rng.random_range(1..=4) {
            let at =
                if rng.random_bool(0.75) { rng.random_range(0..header_len) } else { rng.random_range(0..file.len()) };
            file[at] = match rng.random_range(0..3) {
                0 => rng.random(),
                1 => file[at] ^ (1 << rng.random_range(0..8)),
                _ => 0xFF,
            };
        }
        if rng.random_bool(0.2) {
            let cut = rng.random_range(0..file.len());
            file.truncate(cut);
        }
        if let Ok(g) = Gguf::from_bytes(file) {
            parsed += 1;
            touch_everything(&g);
        }
    }
    assert!(parsed > 100, "only {parsed} corrupted files parsed; corruption too aggressive to test accessors");
}

/// A GGUF image written field by field, for malformed cases the builder
/// refuses to produce.
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, tensors: u64, kvs: u64) -> Self {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(tensors).u64(kvs);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn tensor(&mut self, name: &str, dims: &[u64], type_id: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(type_id).u64(offset)
    }
    /// Pad to 32 and append `data_len` bytes of data.
    fn data(&mut self, data_len: usize) -> Vec<u8> {
        let start = self.0.len().div_ceil(32) * 32;
        let mut out = self.0.clone();
        out.resize(start + data_len, 0x11);
        out
    }
}

fn parse_err(bytes: Vec<u8>) -> LoadError {
    load_err(Gguf::from_bytes(bytes))
}

#[test]
fn bad_magic_and_version() {
    assert!(matches!(parse_err(b"GGML\x03\0\0\0".to_vec()), LoadError::BadMagic { .. }));
    for version in [0, 1, 4, u32::MAX] {
        let r = Raw::header(version, 0, 0);
        assert!(matches!(parse_err(r.0), LoadError::UnsupportedVersion { .. }));
    }
    // Version 2 and 3 with nothing in them are fine.
    assert!(Gguf::from_bytes(Raw::header(2, 0, 0).0).is_ok());
    assert!(Gguf::from_bytes(Raw::header(3, 0, 0).0).is_ok());
}

#[test]
fn absurd_counts_are_refused_before_allocating() {
    assert!(matches!(parse_err(Raw::header(3, 0, u64::MAX).0), LoadError::CountTooLarge { .. }));
    assert!(matches!(parse_err(Raw::header(3, 1 << 40, 0).0), LoadError::CountTooLarge { .. }));
    // A string claiming 2^60 bytes.
    let mut r = Raw::header(3, 0, 1);
    r.u64(1 << 60).u64(0).u64(0);
    assert!(matches!(parse_err(r.0), LoadError::Truncated { .. }));
    // An array of 2^40 strings, and one of 2^62 u64s.
    for (element_type, count) in [(8u32, 1u64 << 40), (10, 1 << 62), (9, u64::MAX)] {
        let mut r = Raw::header(3, 0, 1);
        r.str("k").u32(9).u32(element_type).u64(count);
        assert!(matches!(parse_err(r.0), LoadError::CountTooLarge { .. }), "array type {element_type}");
    }
}

#[test]
fn deep_array_nesting_is_refused() {
    let mut r = Raw::header(3, 0, 1);
    r.str("deep").u32(9);
    for _ in 0..10_000 {
        r.u32(9).u64(1);
    }
    r.u32(0).u64(0);
    assert!(matches!(parse_err(r.0), LoadError::TooLarge { .. }));
}

#[test]
fn unknown_value_and_tensor_types() {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(13).u32(0);
    assert!(matches!(parse_err(r.0), LoadError::UnknownValueType { type_id: 13, .. }));
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(9).u32(99).u64(0);
    assert!(matches!(parse_err(r.0), LoadError::UnknownValueType { type_id: 99, .. }));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[32], 31, 0);
    match parse_err(r.data(128)) {
        LoadError::UnknownTensorType { tensor, type_id } => {
            assert_eq!((tensor.as_str(), type_id), ("w", 31))
        }
        other => panic!("{other}"),
    }
}

#[test]
fn bad_bool_and_utf8() {
    let mut r = Raw::header(3, 0, 1);
    r.str("k").u32(7);
    r.0.push(2);
    assert!(matches!(parse_err(r.0), LoadError::WrongValueType { .. }));
    let mut r = Raw::header(3, 0, 1);
    r.u64(2);
    r.0.extend_from_slice(&[0xC3, 0x28]);
    r.u32(0);
    r.0.push(0);
    assert!(matches!(parse_err(r.0), LoadError::InvalidUtf8 { .. }));
}

#[test]
fn bad_alignment_values() {
    for (type_id, value) in [(4u32, 0u64), (4, 3), (4, 48), (10, 1 << 40)] {
        let mut r = Raw::header(3, 0, 1);
        r.str("general.alignment").u32(type_id);
        if type_id == 4 {
            r.u32(value as u32);
        } else {
            r.u64(value);
        }
        assert!(matches!(parse_err(r.0), LoadError::TooLarge { .. }), "alignment {value}");
    }
    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(8).str("32");
    assert!(matches!(parse_err(r.0), LoadError::WrongValueType { .. }));
}

#[test]
fn bad_tensor_shapes() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[1, 1, 1, 1, 1], 0, 0);
    assert!(matches!(parse_err(r.data(64)), LoadError::BadShape { .. }));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[1 << 32, 1 << 32], 0, 0);
    assert!(matches!(parse_err(r.data(64)), LoadError::BadShape { .. }));
    // Q8_0 rows must be whole 32-element blocks.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[33, 1], 8, 0);
    assert!(matches!(parse_err(r.data(128)), LoadError::BadShape { .. }));
    // I2_S needs 128-element packing blocks.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[64], 36, 0);
    assert!(matches!(parse_err(r.data(128)), LoadError::BadShape { .. }));
}

#[test]
fn bad_tensor_placement() {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[8], 0, 4);
    assert!(matches!(parse_err(r.data(64)), LoadError::TensorMisaligned { offset: 4, .. }));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[16], 0, 32);
    assert!(matches!(parse_err(r.data(64)), LoadError::TensorOutOfBounds { .. }));
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[16], 0, u64::MAX - 31);
    assert!(matches!(parse_err(r.data(64)), LoadError::TensorOutOfBounds { .. }));
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], 0, 0).tensor("b", &[16], 0, 32);
    match parse_err(r.data(96)) {
        LoadError::TensorOverlap { first, second } => {
            assert_eq!((first.as_str(), second.as_str()), ("a", "b"))
        }
        other => panic!("{other}"),
    }
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], 0, 0).tensor("a", &[8], 0, 32);
    assert!(matches!(parse_err(r.data(64)), LoadError::Duplicate { .. }));
    // Adjacent, non-overlapping tensors are fine.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], 0, 0).tensor("b", &[8], 0, 32);
    assert!(Gguf::from_bytes(r.data(64)).is_ok());
}

#[test]
fn duplicate_metadata_key() {
    let mut r = Raw::header(3, 0, 2);
    r.str("k").u32(4).u32(1).str("k").u32(4).u32(2);
    assert!(matches!(parse_err(r.0), LoadError::Duplicate { .. }));
}
