//! Bad model files give clear errors, never panics: truncated, corrupted and
//! wrong-shaped safetensors/GGUF/config/tokenizer files.

use deltallm::engine::ModelFiles;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures").join(name)
}

/// A copy of the tiny Llama folder in a temp dir, with one file changed.
fn broken_folder(file: &str, change: impl FnOnce(Vec<u8>) -> Vec<u8>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut change = Some(change);
    for entry in std::fs::read_dir(fixture("tiny-llama")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let mut bytes = std::fs::read(&path).unwrap();
        if name == file {
            bytes = (change.take().unwrap())(bytes);
        }
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    dir
}

fn load_error(path: &Path) -> String {
    match ModelFiles::load(path) {
        Ok(_) => panic!("{} loaded although it is broken", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_unbroken_fixture_loads() {
    assert!(ModelFiles::load(fixture("tiny-llama")).is_ok());
}

#[test]
fn truncated_safetensors_is_an_error() {
    for keep in [0usize, 7, 100, 5000, 200_000] {
        let dir = broken_folder("model.safetensors", |b| b[..keep.min(b.len() - 1)].to_vec());
        let err = load_error(dir.path());
        assert!(err.contains("safetensors") || err.contains("truncated") || err.contains("header"), "{err}");
    }
}

#[test]
fn corrupted_safetensors_header_is_an_error() {
    let dir = broken_folder("model.safetensors", |mut b| {
        b[8..40].copy_from_slice(&[b'#'; 32]);
        b
    });
    load_error(dir.path());
}

#[test]
fn malformed_config_is_an_error() {
    let dir = broken_folder("config.json", |b| b[..b.len() / 2].to_vec());
    let err = load_error(dir.path());
    assert!(err.contains("config"), "{err}");
}

#[test]
fn config_that_disagrees_with_the_tensors_names_the_tensor() {
    let dir = broken_folder("config.json", |b| {
        String::from_utf8(b).unwrap().replace("\"intermediate_size\": 160", "\"intermediate_size\": 128").into_bytes()
    });
    let err = load_error(dir.path());
    assert!(err.contains("mlp") || err.contains("shape"), "{err}");
}

#[test]
fn corrupted_tokenizer_is_an_error() {
    let dir = broken_folder("tokenizer.json", |b| b[..b.len() / 3].to_vec());
    let err = load_error(dir.path());
    assert!(err.to_lowercase().contains("tokenizer"), "{err}");
}

#[test]
fn truncated_and_corrupted_gguf_is_an_error() {
    let bytes = std::fs::read(fixture("tiny-llama.q8_0.gguf")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    for keep in [0usize, 3, 24, 1000, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        load_error(&path);
    }
    let mut corrupt = bytes.clone();
    corrupt[0] = b'X';
    std::fs::write(&path, &corrupt).unwrap();
    let err = load_error(&path);
    assert!(err.to_lowercase().contains("magic"), "{err}");
}

#[test]
fn missing_paths_and_wrong_kinds_are_errors() {
    let err = load_error(Path::new("/no/such/model.gguf"));
    assert!(err.contains("/no/such/model.gguf"), "{err}");
    let err = load_error(&fixture("prompts.json"));
    assert!(err.contains("expected a model folder"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    load_error(empty.path());
}
