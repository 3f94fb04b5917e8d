//! Loading a model from bytes in memory through `StreamedFiles` (the
//! browser's path, with `Vec<u8>` as the byte source) gives the same engine
//! as loading it from its files, and bad file sets are clear errors. Also the async generation against its blocking wrapper, and the
//! switch between DeltaLLM and dense attention the web API uses.

use deltallm::engine::{Engine, ModelFiles, StreamedFiles};
use deltallm::model::{DeltaOptions, ModelOptions};
use deltallm::weights::StreamedFile;
use deltallm::{Gpu, GpuOptions};
use std::path::Path;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures").join(name)
}

fn read_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// `files` opened from memory, as the browser opens its downloads.
fn from_bytes(files: Vec<(String, Vec<u8>)>) -> deltallm::Result<StreamedFiles> {
    let files = files.into_iter().map(|(name, bytes)| StreamedFile { name, source: Box::new(bytes) }).collect();
    pollster::block_on(StreamedFiles::open(files))
}

fn greedy(engine: &mut Engine, prompt: &str, n: usize) -> Vec<u32> {
    let ids = engine.encode(prompt).unwrap();
    let options = engine.default_options(n);
    engine.generate(&ids, &options, |_| Ok(())).unwrap().tokens
}

fn new_gpu() -> Gpu {
    Gpu::new_blocking(&GpuOptions::from_env()).expect("a GPU adapter")
}

#[test]
fn safetensors_folder_from_bytes_generates_like_from_files() {
    let dir = fixture("tiny-llama");
    let mut from_files = Engine::new(new_gpu(), ModelFiles::load(&dir).unwrap(), ModelOptions::default()).unwrap();
    let files = read_dir(&dir);
    let mut from_bytes = Engine::new_streamed(new_gpu(), from_bytes(files).unwrap(), ModelOptions::default()).unwrap();
    assert!(from_bytes.tokenizer.is_some() && from_bytes.chat_template.is_some());
    let expected = greedy(&mut from_files, "Hello", 8);
    assert_eq!(greedy(&mut from_bytes, "Hello", 8), expected);
}

#[test]
fn gguf_from_bytes_generates_like_from_file() {
    let path = fixture("tiny-llama.q8_0.gguf");
    let mut from_file = Engine::new(new_gpu(), ModelFiles::load(&path).unwrap(), ModelOptions::default()).unwrap();
    // A path-like name and a stray file besides: matched on the last component, ignored.
    let files = vec![
        ("some/dir/tiny.gguf".to_string(), std::fs::read(&path).unwrap()),
        ("README.md".to_string(), b"hi".to_vec()),
    ];
    let mut from_bytes = Engine::new_streamed(new_gpu(), from_bytes(files).unwrap(), ModelOptions::default()).unwrap();
    let ids = vec![1, 5, 9, 30];
    let options = from_file.default_options(6);
    let expected = from_file.generate(&ids, &options, |_| Ok(())).unwrap().tokens;
    assert_eq!(from_bytes.generate(&ids, &options, |_| Ok(())).unwrap().tokens, expected);
}

#[test]
fn bad_file_sets_are_clear_errors() {
    let message = |files: Vec<(String, Vec<u8>)>| match from_bytes(files) {
        Ok(_) => panic!("loaded a bad file set"),
        Err(e) => e.to_string(),
    };
    assert!(message(vec![]).contains("no model among the files"));
    let config = std::fs::read(fixture("tiny-llama/config.json")).unwrap();
    assert!(message(vec![("config.json".into(), config)]).contains("no *.safetensors"));
    let two = vec![("a.gguf".into(), vec![0u8; 8]), ("b.gguf".into(), vec![0u8; 8])];
    assert!(message(two).contains("give one model"));
    let truncated = message(vec![("x.gguf".into(), vec![b'G', b'G'])]);
    assert!(truncated.contains("x.gguf") && truncated.contains("truncated"), "{truncated}");
}

#[test]
fn delta_switches_on_and_back_to_dense() {
    let dir = fixture("tiny-llama");
    let files = ModelFiles::load(&dir).unwrap();
    let mut dense = Engine::new(new_gpu(), ModelFiles::load(&dir).unwrap(), ModelOptions::default()).unwrap();
    let options = ModelOptions { delta: Some(DeltaOptions::default()), ..Default::default() };
    let mut switching = Engine::new(new_gpu(), files, options).unwrap();
    let prompt = "Hello there, this is a longer prompt for the delta";
    let expected = greedy(&mut dense, prompt, 8);

    switching.model.use_dense_attention(&switching.gpu).unwrap();
    assert_eq!(greedy(&mut switching, prompt, 8), expected);
    let delta = DeltaOptions { threshold: 0.5, window_min: 4, ..Default::default() };
    switching.model.set_delta_options(&switching.gpu, delta).unwrap();
    assert!(switching.model.delta_window().is_some());
    greedy(&mut switching, prompt, 8);
    switching.model.use_dense_attention(&switching.gpu).unwrap();
    assert_eq!(switching.model.delta_window(), None);
    assert_eq!(greedy(&mut switching, prompt, 8), expected);
}
