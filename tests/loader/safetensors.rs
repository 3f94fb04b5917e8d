//! safetensors: single file, sharded index, lookups, conversions and the
//! errors for missing, mis-shaped, mistyped and corrupt tensors.

use std::collections::HashMap;
use std::path::Path;

use deltallm::loader::{Dtype, LoadError, SafeTensors};
use rand::Rng;
use safetensors::tensor::TensorView as WriteView;

use super::{load_err, rng};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialize `(name, dtype, shape, bytes)` tensors with the safetensors crate.
fn file_bytes(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, WriteView)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| (name.to_string(), WriteView::new(*dtype, shape.clone(), data).unwrap()))
        .collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

fn first_shard() -> Vec<u8> {
    let bf16: Vec<u8> = [1.0f32, -2.5, 0.15625].iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
    let f16: Vec<u8> = [0.5f32, -0.25].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
    file_bytes(&[
        ("model.norm.weight", Dtype::F32, vec![4], f32_bytes(&[1.0, 2.0, 3.0, 4.0])),
        ("model.embed_tokens.weight", Dtype::BF16, vec![1, 3], bf16),
        ("scale.f16", Dtype::F16, vec![2], f16),
    ])
}

fn second_shard() -> Vec<u8> {
    file_bytes(&[
        ("model.layers.0.mlp.up_proj.weight", Dtype::U8, vec![2, 3], vec![0, 1, 2, 0x55, 0xAA, 0xFF]),
        ("model.layers.0.mlp.up_proj.weight_scale", Dtype::F32, vec![1], f32_bytes(&[0.75])),
        ("signed", Dtype::I8, vec![3], vec![0xFF, 0, 1]),
    ])
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn index_json(map: &[(&str, &str)]) -> String {
    let weight_map: HashMap<&str, &str> = map.iter().copied().collect();
    serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map }).to_string()
}

fn sharded_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "model-00001-of-00002.safetensors", &first_shard());
    write(dir.path(), "model-00002-of-00002.safetensors", &second_shard());
    let one = "model-00001-of-00002.safetensors";
    let two = "model-00002-of-00002.safetensors";
    let index = index_json(&[
        ("model.norm.weight", one),
        ("model.embed_tokens.weight", one),
        ("scale.f16", one),
        ("model.layers.0.mlp.up_proj.weight", two),
        ("model.layers.0.mlp.up_proj.weight_scale", two),
        ("signed", two),
    ]);
    write(dir.path(), "model.safetensors.index.json", index.as_bytes());
    dir
}

#[test]
fn single_file_lookups_and_conversions() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "model.safetensors", &first_shard());
    for path in [dir.path().to_path_buf(), dir.path().join("model.safetensors")] {
        let st = SafeTensors::open(&path).unwrap();
        assert_eq!(st.len(), 3);
        assert_eq!(st.names(), ["model.embed_tokens.weight", "model.norm.weight", "scale.f16"]);
        let norm = st.tensor("model.norm.weight").unwrap();
        assert_eq!((norm.dtype(), norm.shape()), (Dtype::F32, &[4usize][..]));
        assert_eq!(norm.to_f32().unwrap(), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(st.f32_with_shape("model.embed_tokens.weight", &[1, 3]).unwrap(), [1.0, -2.5, 0.15625]);
        assert_eq!(st.tensor("scale.f16").unwrap().to_f32().unwrap(), [0.5, -0.25]);
    }
}

#[test]
fn sharded_index_finds_tensors_across_files() {
    let dir = sharded_dir();
    for path in [dir.path().to_path_buf(), dir.path().join("model.safetensors.index.json")] {
        let st = SafeTensors::open(&path).unwrap();
        assert_eq!(st.files().len(), 2);
        assert_eq!(st.len(), 6);
        let packed = st.tensor("model.layers.0.mlp.up_proj.weight").unwrap();
        assert!(packed.file().ends_with("model-00002-of-00002.safetensors"));
        assert_eq!(packed.as_u8().unwrap(), [0, 1, 2, 0x55, 0xAA, 0xFF]);
        assert_eq!(st.tensor("signed").unwrap().as_i8().unwrap(), [-1, 0, 1]);
        assert_eq!(st.tensor("signed").unwrap().to_f32().unwrap(), [-1.0, 0.0, 1.0]);
        assert_eq!(st.tensor("model.norm.weight").unwrap().to_f32().unwrap()[3], 4.0);
    }
}

#[test]
fn missing_tensor_names_it_and_the_files() {
    let dir = sharded_dir();
    let st = SafeTensors::open(dir.path()).unwrap();
    let message = st.tensor("lm_head.weight").unwrap_err().to_string();
    assert!(message.contains("lm_head.weight"), "{message}");
    assert!(
        message.contains("model-00001-of-00002.safetensors") && message.contains("model-00002-of-00002"),
        "{message}"
    );
    assert!(st.get("lm_head.weight").is_none());
}

#[test]
fn wrong_shape_and_dtype_name_the_problem() {
    let dir = sharded_dir();
    let st = SafeTensors::open(dir.path()).unwrap();
    let norm = st.tensor("model.norm.weight").unwrap();
    match load_err(norm.expect_shape(&[2048])) {
        LoadError::WrongShape { tensor, expected, found } => {
            assert!(tensor.contains("model.norm.weight"));
            assert_eq!((expected, found), (vec![2048], vec![4]));
        }
        other => panic!("{other}"),
    }
    let message = norm.expect_shape(&[2, 2]).unwrap_err().to_string();
    assert!(message.contains("[4]") && message.contains("[2, 2]"), "{message}");
    match load_err(norm.as_u8()) {
        LoadError::WrongDtype { expected, found, .. } => assert_eq!((expected.as_str(), found.as_str()), ("U8", "F32")),
        other => panic!("{other}"),
    }
    assert!(st.f32_with_shape("model.norm.weight", &[5]).is_err());
}

#[test]
fn index_errors() {
    let dir = sharded_dir();
    // The index names a tensor its shard lacks.
    let index = index_json(&[("ghost.weight", "model-00001-of-00002.safetensors")]);
    write(dir.path(), "bad.index.json", index.as_bytes());
    let message = SafeTensors::open_index(dir.path().join("bad.index.json")).unwrap_err().to_string();
    assert!(message.contains("ghost.weight") && message.contains("model-00001-of-00002"), "{message}");
    // The index puts a tensor in the wrong shard.
    let index = index_json(&[
        ("signed", "model-00001-of-00002.safetensors"),
        ("scale.f16", "model-00002-of-00002.safetensors"),
    ]);
    write(dir.path(), "wrong.index.json", index.as_bytes());
    assert!(SafeTensors::open_index(dir.path().join("wrong.index.json")).is_err());
    // A shard that does not exist.
    let index = index_json(&[("x", "model-00003-of-00003.safetensors")]);
    write(dir.path(), "absent.index.json", index.as_bytes());
    let message = SafeTensors::open_index(dir.path().join("absent.index.json")).unwrap_err().to_string();
    assert!(message.contains("model-00003-of-00003.safetensors"), "{message}");
    // Malformed JSON and a path escaping the directory.
    write(dir.path(), "broken.index.json", b"{\"weight_map\": [1, 2]}");
    let err = load_err(SafeTensors::open_index(dir.path().join("broken.index.json")));
    assert!(matches!(err, LoadError::Json { .. }), "{err}");
    let index = index_json(&[("x", "../elsewhere.safetensors")]);
    write(dir.path(), "escape.index.json", index.as_bytes());
    assert!(SafeTensors::open_index(dir.path().join("escape.index.json")).is_err());
    // Two shards holding the same tensor.
    assert!(matches!(
        load_err(SafeTensors::from_bytes(vec![("a".into(), first_shard()), ("b".into(), first_shard())])),
        LoadError::Duplicate { .. }
    ));
    // An empty directory.
    let empty = tempfile::tempdir().unwrap();
    let message = SafeTensors::open(empty.path()).unwrap_err().to_string();
    assert!(message.contains("model.safetensors"), "{message}");
}

#[test]
fn truncated_files_are_errors() {
    let bytes = second_shard();
    for len in 0..bytes.len() {
        let err = SafeTensors::from_bytes(vec![("cut.safetensors".into(), bytes[..len].to_vec())]).unwrap_err();
        assert!(err.to_string().contains("cut.safetensors"), "{err}");
    }
    let message =
        SafeTensors::from_bytes(vec![("x".into(), bytes[..bytes.len() - 1].to_vec())]).unwrap_err().to_string();
    assert!(message.contains("truncated"), "{message}");
}

#[test]
fn random_corruption_never_panics() {
    let mut rng = rng(11);
    let original = first_shard();
    for _ in 0..3000 {
        let mut bytes = original.clone();
        for _ in 0..rng.random_range(1..=3) {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        if let Ok(st) = SafeTensors::from_bytes(vec![("c".into(), bytes)]) {
            for name in st.names() {
                let view = st.tensor(name).unwrap();
                let _ = (view.to_f32(), view.as_u8(), view.as_i8(), view.expect_shape(&[4]));
            }
        }
    }
}
