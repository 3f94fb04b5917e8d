//! Streamed loading (weights read by byte range, one part at a time) gives
//! the same model as decoding whole files: bit-identical logits on every
//! fixture format (safetensors dense and BitNet-packed, GGUF f32, Q8_0,
//! I2_S, and the SmolLM2 Q4_1 package model when fetched). A counting
//! source shows what a load reads at once, and broken files are errors
//! naming the file and tensor.

mod support;
use support::{TOKENS, bitnet_i2_s_gguf, gpu};

use deltallm::engine::{Engine, ModelFiles, StreamedFiles};
use deltallm::loader::gguf::{GgufBuilder, GgufValue, MAX_STREAMED_HEADER};
use deltallm::loader::quants::GgmlType;
use deltallm::loader::stream::FileSource;
use deltallm::loader::{ByteSource, LocalFuture};
use deltallm::model::{Model, ModelOptions};
use deltallm::weights::{
    LayerWeights, Matrix, ModelWeights, StreamedFile, StreamedWeights, WeightFormats, WeightSource,
};
use deltallm::{Error, Result};
use std::borrow::Cow;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

fn new_gpu() -> deltallm::Gpu {
    deltallm::Gpu::new_blocking(&deltallm::GpuOptions::from_env()).expect("a GPU adapter")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures").join(name)
}

/// What a [`Counting`] source has been asked for.
#[derive(Default)]
struct Reads {
    /// Bytes since the last [`Reads::start_part`].
    part: Cell<u64>,
    /// The most bytes read for one part, and in one read.
    max_part: Cell<u64>,
    max_read: Cell<u64>,
    total: Cell<u64>,
}

impl Reads {
    fn start_part(&self) {
        self.part.set(0);
    }

    fn end_part(&self) {
        self.max_part.set(self.max_part.get().max(self.part.get()));
    }
}

/// A source that counts its reads into shared [`Reads`].
struct Counting<S> {
    inner: S,
    reads: Rc<Reads>,
}

impl<S: ByteSource> ByteSource for Counting<S> {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read(&self, offset: u64, len: u64) -> LocalFuture<'_, Result<Vec<u8>>> {
        let r = &self.reads;
        r.part.set(r.part.get() + len);
        r.total.set(r.total.get() + len);
        r.max_read.set(r.max_read.get().max(len));
        self.inner.read(offset, len)
    }
}

/// A streamed source that marks each part's reads for [`Reads`].
struct Probe<'a> {
    weights: &'a StreamedWeights,
    reads: &'a Reads,
}

impl WeightSource for Probe<'_> {
    fn config(&self) -> &deltallm::loader::ModelConfig {
        self.weights.config()
    }

    fn rope_inv_freq(&self) -> &[f64] {
        self.weights.rope_inv_freq()
    }

    fn formats(&self) -> WeightFormats {
        self.weights.formats()
    }

    fn embed_tokens(&self) -> LocalFuture<'_, Result<Cow<'_, Matrix>>> {
        Box::pin(async move {
            self.reads.start_part();
            let part = self.weights.embed_tokens().await;
            self.reads.end_part();
            part
        })
    }

    fn layer(&self, i: usize) -> LocalFuture<'_, Result<Cow<'_, LayerWeights>>> {
        Box::pin(async move {
            self.reads.start_part();
            let part = self.weights.layer(i).await;
            self.reads.end_part();
            part
        })
    }

    fn norm(&self) -> LocalFuture<'_, Result<Cow<'_, [f32]>>> {
        Box::pin(async move {
            self.reads.start_part();
            let part = self.weights.norm().await;
            self.reads.end_part();
            part
        })
    }

    fn lm_head(&self) -> LocalFuture<'_, Result<Option<Cow<'_, Matrix>>>> {
        Box::pin(async move {
            self.reads.start_part();
            let part = self.weights.lm_head().await;
            self.reads.end_part();
            part
        })
    }
}

/// The files of a model: a .gguf, or every file of a folder.
fn model_paths(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    }
}

fn open_streamed(files: Vec<(String, Box<dyn ByteSource>)>) -> Result<StreamedFiles> {
    let files = files.into_iter().map(|(name, source)| StreamedFile { name, source }).collect();
    pollster::block_on(StreamedFiles::open(files))
}

fn options() -> ModelOptions {
    ModelOptions { all_logits: true, ..Default::default() }
}

/// Every position's logits of the fixed token sequence.
fn logits(model: &mut Model, vocab: usize) -> Vec<f32> {
    let tokens: Vec<u32> = TOKENS.iter().map(|&t| t % vocab as u32).collect();
    model.forward_all(gpu(), &tokens).unwrap()
}

/// Streamed from `files` (each counted) against decoded `weights`: the same
/// formats, bit-identical logits, each tensor read once, and no part's
/// reads above the largest part. Returns the reads.
fn check_streamed(label: &str, weights: &ModelWeights, files: Vec<(String, Box<dyn ByteSource>)>) -> Rc<Reads> {
    let reads = Rc::new(Reads::default());
    let files: Vec<(String, Box<dyn ByteSource>)> = files
        .into_iter()
        .map(|(name, inner)| {
            let counted: Box<dyn ByteSource> = Box::new(Counting { inner, reads: reads.clone() });
            (name, counted)
        })
        .collect();
    let file_bytes: u64 = files.iter().map(|(_, s)| s.len()).sum();
    let streamed = open_streamed(files).unwrap_or_else(|e| panic!("{label}: {e}"));
    let header_reads = reads.total.get();
    assert_eq!(streamed.weights.formats(), WeightFormats::of(weights), "{label}: formats from the headers");
    assert_eq!(streamed.weights.config(), &weights.config, "{label}");
    assert_eq!(streamed.weights.rope_inv_freq(), weights.rope_inv_freq.as_slice(), "{label}");

    let vocab = weights.config.vocab_size;
    let mut expected_model = Model::load(gpu(), weights, options()).unwrap();
    let expected = logits(&mut expected_model, vocab);
    drop(expected_model);
    let probe = Probe { weights: &streamed.weights, reads: &reads };
    let mut model = pollster::block_on(Model::load_from(gpu(), &probe, options(), &mut |_, _| {}))
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let got = logits(&mut model, vocab);
    assert!(got.iter().all(|x| x.is_finite()), "{label}: non-finite logits");
    assert!(got == expected, "{label}: streamed logits differ from the decoded weights'");

    let largest = streamed.weights.largest_part_bytes();
    assert!(reads.max_part.get() <= largest, "{label}: a part read {} bytes, the largest is {largest}", {
        reads.max_part.get()
    });
    assert!(reads.max_read.get() <= largest.max(1 << 20), "{label}: one read of {} bytes", reads.max_read.get());
    // Each tensor once: the load reads no more than the files hold besides their headers.
    let load_reads = reads.total.get() - header_reads;
    assert!(load_reads + header_reads <= file_bytes + (1 << 20), "{label}: {load_reads} bytes read for {file_bytes}");
    println!(
        "{label}: file(s) {file_bytes} B, headers {header_reads} B, largest part {largest} B, most one part read {} B",
        reads.max_part.get()
    );
    reads
}

fn file_sources(paths: &[PathBuf]) -> Vec<(String, Box<dyn ByteSource>)> {
    paths
        .iter()
        .map(|p| {
            let source: Box<dyn ByteSource> = Box::new(FileSource::open(p).unwrap());
            (p.file_name().unwrap().to_string_lossy().to_string(), source)
        })
        .collect()
}

#[test]
fn streamed_fixtures_give_the_logits_of_decoded_weights() {
    for name in [
        "tiny-llama",
        "tiny-llama3rope",
        "tiny-bitnet",
        "tiny-bitnet-autobitlinear",
        "tiny-llama.f32.gguf",
        "tiny-llama.q8_0.gguf",
        "tiny-llama3rope.f32.gguf",
        "tiny-llama3rope.q8_0.gguf",
    ] {
        let path = fixture(name);
        let weights = ModelFiles::load(&path).unwrap().weights;
        check_streamed(name, &weights, file_sources(&model_paths(&path)));
    }
}

#[test]
fn streamed_bitnet_i2_s_gguf_gives_the_logits_of_decoded_weights() {
    let packed = ModelWeights::load(fixture("tiny-bitnet")).unwrap();
    let bytes = bitnet_i2_s_gguf(&packed);
    let weights = ModelWeights::from_gguf(&deltallm::loader::Gguf::from_bytes(bytes.clone()).unwrap()).unwrap();
    assert!(WeightFormats::of(&weights).ternary);
    check_streamed("tiny-bitnet I2_S gguf", &weights, vec![("bitnet.gguf".into(), Box::new(bytes))]);
}

/// SmolLM2 (GGUF Q4_1 with a Q8_0 embedding, 98 MB): bit-identical, and a
/// load never reads more than one part (the 30 MB embedding) at once.
#[test]
fn streamed_smollm2_reads_one_part_at_a_time() {
    let Some(path) = support::smollm2() else { return };
    let weights = ModelWeights::load(&path).unwrap();
    let file_len = std::fs::metadata(&path).unwrap().len();
    let reads = check_streamed("SmolLM2", &weights, file_sources(std::slice::from_ref(&path)));
    assert!(reads.max_part.get() < file_len / 3, "one part read {} of {file_len} bytes", reads.max_part.get());
}

#[test]
fn a_streamed_engine_generates_like_the_whole_files() {
    let path = fixture("tiny-llama");
    let mut whole = Engine::new(new_gpu(), ModelFiles::load(&path).unwrap(), ModelOptions::default()).unwrap();
    let files = open_streamed(file_sources(&model_paths(&path))).unwrap();
    assert!(files.tokenizer.is_some() && files.chat_template.is_some());
    let mut streamed = Engine::new_streamed(new_gpu(), files, ModelOptions::default()).unwrap();
    let ids = whole.encode("Hello").unwrap();
    assert_eq!(streamed.encode("Hello").unwrap(), ids);
    let options = whole.default_options(8);
    let expected = whole.generate(&ids, &options, |_| Ok(())).unwrap().tokens;
    assert_eq!(streamed.generate(&ids, &options, |_| Ok(())).unwrap().tokens, expected);
}

/// A source whose bytes stop early although it claims the whole length
/// (a file changed under the reader, a broken Blob).
struct ShortReads(Vec<u8>, u64);

impl ByteSource for ShortReads {
    fn len(&self) -> u64 {
        self.1
    }

    fn read(&self, offset: u64, len: u64) -> LocalFuture<'_, Result<Vec<u8>>> {
        self.0.read(offset, len)
    }
}

fn streamed_error(files: Vec<(String, Box<dyn ByteSource>)>) -> String {
    let result = open_streamed(files).and_then(|files| {
        pollster::block_on(Model::load_from(gpu(), &files.weights, ModelOptions::default(), &mut |_, _| {}))
    });
    match result {
        Ok(_) => panic!("a broken file loaded"),
        Err(e) => e.to_string(),
    }
}

/// A small GGUF whose last tensor is `blk.0.ffn_down.weight`.
fn q8_gguf() -> Vec<u8> {
    std::fs::read(fixture("tiny-llama.q8_0.gguf")).unwrap()
}

#[test]
fn truncated_files_name_the_file_and_the_tensor() {
    let bytes = q8_gguf();
    // Cut inside the header, inside the data, and one byte short.
    for len in [20, 3000, bytes.len() / 2, bytes.len() - 1] {
        let cut = bytes[..len].to_vec();
        let message = streamed_error(vec![("cut.gguf".into(), Box::new(cut))]);
        assert!(message.contains("cut.gguf"), "{len}: {message}");
        assert!(message.contains("truncated"), "{len}: {message}");
    }
    // A tensor past the end names it.
    let message = streamed_error(vec![("cut.gguf".into(), Box::new(bytes[..bytes.len() - 1].to_vec()))]);
    assert!(message.contains("lies outside the data section"), "{message}");
    // A source that returns fewer bytes than it claims: the tensor being read is named.
    let claimed = bytes.len() as u64;
    let short = ShortReads(bytes[..bytes.len() - 100].to_vec(), claimed);
    let message = streamed_error(vec![("short.gguf".into(), Box::new(short))]);
    assert!(message.contains("short.gguf") && message.contains("tensor '"), "{message}");
    assert!(message.contains("truncated"), "{message}");

    let dir = fixture("tiny-llama");
    let whole = std::fs::read(dir.join("model.safetensors")).unwrap();
    // The folder's files with `shard` in place of model.safetensors.
    let with_shard = |shard: Box<dyn ByteSource>| {
        let mut files = file_sources(&model_paths(&dir));
        files.iter_mut().find(|(name, _)| name == "model.safetensors").unwrap().1 = shard;
        files
    };
    for len in [4, 100, whole.len() - 1] {
        let message = streamed_error(with_shard(Box::new(whole[..len].to_vec())));
        assert!(message.contains("model.safetensors"), "{len}: {message}");
    }
    let short = ShortReads(whole[..whole.len() - 64].to_vec(), whole.len() as u64);
    let message = streamed_error(with_shard(Box::new(short)));
    assert!(message.contains("model.safetensors") && message.contains("tensor '"), "{message}");
    assert!(message.contains("truncated"), "{message}");
}

#[test]
fn a_header_that_never_ends_is_an_error() {
    // A GGUF whose metadata is bigger than the header limit.
    let big = GgufBuilder::new()
        .metadata("general.architecture", GgufValue::String("llama".into()))
        .metadata("padding", GgufValue::String("x".repeat(3 << 20)))
        .tensor("t", &[4], GgmlType::F32, vec![0; 16])
        .build();
    let source: Box<dyn ByteSource> = Box::new(big);
    let file = StreamedFile { name: "huge.gguf".into(), source };
    let message = match pollster::block_on(StreamedWeights::gguf(file, 1 << 20)) {
        Ok(_) => panic!("an over-long header was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("huge.gguf") && message.contains("GGUF header"), "{message}");
    // The same file parses under the default limit (then fails for lack of a model config).
    let big = GgufBuilder::new().metadata("padding", GgufValue::String("x".repeat(3 << 20))).build();
    let header =
        pollster::block_on(deltallm::loader::Gguf::read_header("big.gguf", &big, MAX_STREAMED_HEADER)).unwrap();
    assert!(header.contains_key("padding"));
    // A header whose string runs past the end of the file.
    let mut endless = big.clone();
    endless.truncate(endless.len() - 1000);
    let message = match pollster::block_on(deltallm::loader::Gguf::read_header("endless.gguf", &endless, 8 << 20)) {
        Ok(_) => panic!("a header past the end parsed"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("endless.gguf") && message.contains("truncated"), "{message}");
}

#[test]
fn an_unknown_tensor_type_names_the_tensor() {
    let bytes = GgufBuilder::new().tensor("strange.weight", &[32], GgmlType::F32, vec![0; 128]).build();
    // The type id follows the tensor's name, dimension count and dimension.
    let at = bytes.windows(14).position(|w| w == b"strange.weight").unwrap() + 14 + 4 + 8;
    let mut bytes = bytes;
    bytes[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let message = streamed_error(vec![("odd.gguf".into(), Box::new(bytes))]);
    assert!(message.contains("odd.gguf") && message.contains("strange.weight"), "{message}");
    assert!(message.contains("unknown ggml type"), "{message}");
}

#[test]
fn the_in_memory_source_lends_its_parts() {
    let weights = ModelWeights::load(fixture("tiny-llama")).unwrap();
    let layer = pollster::block_on(WeightSource::layer(&weights, 0)).unwrap();
    assert!(matches!(layer, Cow::Borrowed(_)));
    let missing = pollster::block_on(WeightSource::layer(&weights, 99));
    assert!(matches!(missing, Err(Error::Invalid(_))));
}
