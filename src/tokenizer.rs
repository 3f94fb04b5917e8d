//! Text <-> token ids, over the Hugging Face `tokenizers` crate.
//!
//! Two ways in: a `tokenizer.json` (safetensors releases) or the plain data
//! of a GGUF file's `tokenizer.ggml.*` keys, from which an equivalent
//! byte-level BPE tokenizer is built ([`GgufVocab`]). The models this crate
//! runs (BitNet b1.58 2B4T and Llama 3.2 share the Llama 3 vocabulary;
//! SmolLM2 has a GPT-2 style one) are all byte-level BPE: every token is a
//! string over a 256-character alphabet that stands for raw bytes, so a
//! token can end in the middle of a UTF-8 character. [`TokenStream`] turns
//! ids into text while generating and holds such bytes back until their
//! character is complete.
//!
//! Special tokens (`<|eot_id|>`, `<|im_start|>`, ...) written in the text are
//! always encoded as their single id, as Hugging Face does (llama.cpp calls
//! this `parse_special`). `encode(text, add_special)` decides only whether
//! the BOS token the model expects is put in front.

use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

/// Llama 3's pre-tokenizer split (from its tokenizer.json; llama.cpp's
/// `llama-bpe` spells the case-insensitive contractions as `'[sS]` etc.).
/// Letters run with at most one leading non-letter, digits go in groups of
/// at most three, punctuation keeps its trailing newlines.
pub const LLAMA3_SPLIT_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    /// Special tokens the model uses for control: BOS, EOS, `<|im_start|>`.
    pub const CONTROL: i32 = 3;
    /// Added by the model's authors, matched in text verbatim.
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// Names of end-of-turn tokens that stop generation besides EOS, for the
/// vocabularies this crate meets (Llama 3: `<|eot_id|>`, `<|eom_id|>`;
/// ChatML models such as SmolLM2: `<|im_end|>`).
const END_OF_TURN_TOKENS: &[&str] =
    &["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>", "</s>"];

/// Names of BOS tokens, tried in order when a tokenizer.json is loaded
/// without its config.
const BOS_TOKENS: &[&str] = &["<|begin_of_text|>", "<s>", "<|endoftext|>"];

/// The `tokenizer.ggml.*` data of a GGUF file, as plain values.
#[derive(Clone, Debug, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: only `"gpt2"` (byte-level BPE) is supported.
    pub model: String,
    /// `tokenizer.ggml.pre`: which pre-tokenizer split to use, e.g.
    /// `"llama-bpe"` (Llama 3, BitNet) or `"smollm"`.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, indexed by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.merges`: `"left right"`, highest priority first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.token_type`, one per token (see [`token_type`]).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`; when absent, the default llama.cpp
    /// uses for the `pre` type (true for the Llama 3 family).
    pub add_bos: Option<bool>,
}

/// How the GGUF `pre` types we know map onto `tokenizers` pre-tokenizers.
enum PreTokenizerKind {
    /// Llama 3: one regex split, then byte-level without its own regex.
    Llama3,
    /// GPT-2's regex, with every digit split off first (SmolLM, StarCoder).
    Gpt2SingleDigits,
    /// GPT-2's regex alone.
    Gpt2,
}

impl PreTokenizerKind {
    fn from_gguf(pre: Option<&str>) -> Result<Self> {
        match pre {
            Some("llama3" | "llama-v3" | "llama-bpe" | "falcon3") => Ok(Self::Llama3),
            Some("smollm" | "starcoder" | "refact" | "command-r" | "codeshell") => Ok(Self::Gpt2SingleDigits),
            Some("gpt2" | "gpt-2" | "phi-2" | "mpt" | "olmo") => Ok(Self::Gpt2),
            None | Some("default") => {
                log::warn!(
                    "GGUF has no tokenizer.ggml.pre; using the GPT-2 split, \
                     which may differ from llama.cpp's 'default' on punctuation and digits"
                );
                Ok(Self::Gpt2)
            }
            Some(other) => Err(Error::Tokenizer(format!(
                "unsupported GGUF pre-tokenizer type '{other}' (tokenizer.ggml.pre); supported: \
                 llama-bpe/llama3, smollm/starcoder, gpt-2. Use the model's tokenizer.json instead"
            ))),
        }
    }

    /// llama.cpp adds BOS by default for the Llama 3 family only.
    fn adds_bos_by_default(&self) -> bool {
        matches!(self, Self::Llama3)
    }

    /// Llama 3 looks a whole pre-token up in the vocabulary before merging.
    fn ignores_merges(&self) -> bool {
        matches!(self, Self::Llama3)
    }

    fn build(&self) -> Result<PreTokenizerWrapper> {
        let byte_level = |use_regex| ByteLevel::new(false, true, use_regex);
        let parts: Vec<PreTokenizerWrapper> = match self {
            Self::Llama3 => {
                let split =
                    Split::new(SplitPattern::Regex(LLAMA3_SPLIT_REGEX.into()), SplitDelimiterBehavior::Isolated, false)
                        .map_err(|e| Error::Tokenizer(format!("building the Llama 3 split: {e}")))?;
                vec![split.into(), byte_level(false).into()]
            }
            Self::Gpt2SingleDigits => vec![Digits::new(true).into(), byte_level(true).into()],
            Self::Gpt2 => vec![byte_level(true).into()],
        };
        Ok(Sequence::new(parts).into())
    }
}

/// A tokenizer plus the ids generation needs (BOS, stop tokens).
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// BOS put in front by `encode(_, true)` ourselves; `None` when the
    /// tokenizer.json's own post-processor does it (or nothing should).
    prepend_bos: Option<u32>,
    bos_id: Option<u32>,
    stop_ids: Vec<u32>,
    /// Byte-level alphabet char -> byte, when the decoder is byte-level;
    /// lets [`TokenStream`] work on exact bytes.
    byte_decoder: Option<HashMap<char, u8>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("stop_ids", &self.stop_ids)
            .field("byte_level", &self.byte_decoder.is_some())
            .finish()
    }
}

fn tokenizer_error(context: &str, error: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{context}: {error}"))
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            Error::Tokenizer(message) => Error::Tokenizer(format!("{}: {message}", path.display())),
            other => other,
        })
    }

    /// Parses the contents of a Hugging Face `tokenizer.json`. BOS and stop
    /// ids are guessed from well-known token names; override them with
    /// [`Tokenizer::with_special_ids`] when the model's config says otherwise.
    pub fn from_bytes(json: &[u8]) -> Result<Self> {
        let inner =
            tokenizers::Tokenizer::from_bytes(json).map_err(|e| tokenizer_error("not a valid tokenizer.json", e))?;
        let bos_id = BOS_TOKENS.iter().find_map(|t| inner.token_to_id(t));
        Ok(Self::assemble(inner, None, bos_id, None))
    }

    /// Builds a byte-level BPE tokenizer from a GGUF file's tokenizer keys,
    /// equivalent to the Hugging Face one the GGUF was converted from.
    pub fn from_gguf_parts(vocab: GgufVocab) -> Result<Self> {
        if vocab.model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "unsupported GGUF tokenizer model '{}' (tokenizer.ggml.model); only 'gpt2' \
                 (byte-level BPE, as in Llama 3, BitNet and SmolLM2) is supported",
                vocab.model
            )));
        }
        let kind = PreTokenizerKind::from_gguf(vocab.pre.as_deref())?;
        let token_count = vocab.tokens.len();
        if let Some(types) = &vocab.token_types
            && types.len() != token_count
        {
            return Err(Error::Tokenizer(format!("GGUF has {} token types for {token_count} tokens", types.len())));
        }
        for (name, id) in [("bos", vocab.bos_id), ("eos", vocab.eos_id)] {
            if let Some(id) = id
                && id as usize >= token_count
            {
                return Err(Error::Tokenizer(format!(
                    "GGUF {name} token id {id} is outside the vocabulary of {token_count} tokens"
                )));
            }
        }

        let mut ids = ahash::AHashMap::with_capacity(token_count);
        for (id, token) in vocab.tokens.iter().enumerate() {
            if ids.insert(token.clone(), id as u32).is_some() {
                log::warn!("GGUF vocabulary repeats token {token:?}; the later id {id} wins");
            }
        }
        let merges = vocab
            .merges
            .iter()
            .map(|merge| {
                merge
                    .split_once(' ')
                    .map(|(left, right)| (left.to_string(), right.to_string()))
                    .ok_or_else(|| Error::Tokenizer(format!("GGUF merge {merge:?} is not 'left right'")))
            })
            .collect::<Result<Vec<_>>>()?;
        let model = BPE::builder()
            .vocab_and_merges(ids, merges)
            .ignore_merges(kind.ignores_merges())
            .build()
            .map_err(|e| tokenizer_error("building BPE from the GGUF vocabulary", e))?;

        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(kind.build()?)).with_decoder(Some(ByteLevel::default()));
        // Control and user-defined tokens are matched in the text before
        // the split, so `<|im_start|>` is one id and not seven pieces.
        if let Some(types) = &vocab.token_types {
            let added: Vec<AddedToken> = vocab
                .tokens
                .iter()
                .zip(types)
                .filter_map(|(token, &kind)| match kind {
                    token_type::CONTROL => Some(AddedToken::from(token.clone(), true)),
                    token_type::USER_DEFINED => Some(AddedToken::from(token.clone(), false).normalized(false)),
                    _ => None,
                })
                .collect();
            inner.add_tokens(added).map_err(|e| tokenizer_error("adding the GGUF special tokens", e))?;
        }

        let add_bos = vocab.add_bos.unwrap_or(kind.adds_bos_by_default());
        let prepend_bos = match (add_bos, vocab.bos_id) {
            (true, Some(bos)) => Some(bos),
            (true, None) => {
                return Err(Error::Tokenizer(
                    "GGUF asks to add a BOS token but has no tokenizer.ggml.bos_token_id".into(),
                ));
            }
            (false, _) => None,
        };
        Ok(Self::assemble(inner, prepend_bos, vocab.bos_id, vocab.eos_id))
    }

    fn assemble(
        inner: tokenizers::Tokenizer,
        prepend_bos: Option<u32>,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
    ) -> Self {
        let mut stop_ids: Vec<u32> = eos_id.into_iter().collect();
        for name in END_OF_TURN_TOKENS {
            if let Some(id) = inner.token_to_id(name)
                && !stop_ids.contains(&id)
            {
                stop_ids.push(id);
            }
        }
        let byte_decoder = match inner.get_decoder() {
            Some(DecoderWrapper::ByteLevel(_)) => Some(byte_level_decoder()),
            _ => None,
        };
        Self { inner, prepend_bos, bos_id, stop_ids, byte_decoder }
    }

    /// Overrides the BOS id and the ids that end generation (from the
    /// model's config.json / generation_config.json).
    pub fn with_special_ids(mut self, bos_id: Option<u32>, stop_ids: Vec<u32>) -> Self {
        if self.prepend_bos.is_some() {
            self.prepend_bos = bos_id;
        }
        self.bos_id = bos_id;
        self.stop_ids = stop_ids;
        self
    }

    /// Text to ids. `add_special` puts the model's BOS in front (if it uses
    /// one); special tokens written in the text are always single ids.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let encoding = self.inner.encode_fast(text, add_special).map_err(|e| tokenizer_error("encoding failed", e))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if add_special && let Some(bos) = self.prepend_bos {
            ids.push(bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// Ids to text, special tokens included. Bytes that do not form valid
    /// UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_with(ids, false)
    }

    /// Ids to text, leaving out special tokens when `skip_special`.
    pub fn decode_with(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.check_ids(ids)?;
        self.inner.decode(ids, skip_special).map_err(|e| tokenizer_error("decoding failed", e))
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let size = self.vocab_size();
        match ids.iter().find(|&&id| id as usize >= size) {
            Some(id) => Err(Error::Tokenizer(format!("token id {id} is outside the vocabulary of {size} tokens"))),
            None => Ok(()),
        }
    }

    /// A streaming decoder for generation; see [`TokenStream`].
    pub fn stream(&self, skip_special: bool) -> TokenStream<'_> {
        TokenStream::new(self, skip_special)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token's string as stored in the vocabulary (byte-level alphabet:
    /// a leading space shows as `Ġ`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of ids, added tokens included (the embedding may be larger).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Ids that end generation: EOS and the end-of-turn tokens present.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.inner.id_to_token(id).is_some_and(|t| self.inner.get_added_vocabulary().is_special_token(&t))
    }

    /// The raw bytes one token stands for, when the tokenizer is byte-level.
    /// Tokens outside the byte alphabet (some added tokens) are their own
    /// UTF-8, as the byte-level decoder treats them.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let byte_decoder = self.byte_decoder.as_ref()?;
        let token = self.inner.id_to_token(id)?;
        let mapped: Option<Vec<u8>> = token.chars().map(|c| byte_decoder.get(&c).copied()).collect();
        Some(mapped.unwrap_or_else(|| token.into_bytes()))
    }

    /// The underlying `tokenizers` tokenizer, for what this API lacks.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// GPT-2's byte-level alphabet, inverted: printable Latin-1 bytes stand for
/// themselves, the other 68 bytes take the characters from U+0100 on, in
/// byte order.
fn byte_level_decoder() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next_unprintable = 0u32;
    (0..=255u8)
        .map(|b| {
            let c = if printable(b) {
                char::from(b)
            } else {
                next_unprintable += 1;
                char::from_u32(255 + next_unprintable).expect("U+0100..U+0143 are chars")
            };
            (c, b)
        })
        .collect()
}

/// Turns ids into text as they are generated. Concatenating everything
/// [`TokenStream::push`] returns, then [`TokenStream::finish`], gives exactly
/// `decode` of all the ids (with the same `skip_special`).
///
/// Byte-level tokenizers are streamed byte-exactly: bytes of a character cut
/// across tokens wait until it is complete; invalid bytes become U+FFFD as
/// in `decode`. Other tokenizers are streamed by decoding a short window of
/// ids and emitting what was added once it ends in a whole character.
pub struct TokenStream<'a> {
    tokenizer: &'a Tokenizer,
    skip_special: bool,
    /// Byte-level path: bytes of an unfinished character.
    pending: Vec<u8>,
    /// Window path: ids still needed as context, and how many of them have
    /// already been emitted.
    window: Vec<u32>,
    emitted: usize,
}

impl<'a> TokenStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer, skip_special: bool) -> Self {
        Self { tokenizer, skip_special, pending: Vec::new(), window: Vec::new(), emitted: 0 }
    }

    /// Adds one id; returns the text it completes (often empty while a
    /// multi-byte character is split across tokens).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.tokenizer.check_ids(&[id])?;
        if self.skip_special && self.tokenizer.is_special(id) {
            return Ok(String::new());
        }
        match self.tokenizer.token_bytes(id) {
            Some(bytes) => {
                self.pending.extend_from_slice(&bytes);
                Ok(self.take_complete_chars())
            }
            None => self.push_window(id),
        }
    }

    /// Ends the stream: whatever is held back, as `decode` would show it.
    pub fn finish(&mut self) -> Result<String> {
        let mut text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        if !self.window.is_empty() {
            let seen = self.tokenizer.decode_with(&self.window[..self.emitted], self.skip_special)?;
            let all = self.tokenizer.decode_with(&self.window, self.skip_special)?;
            text.push_str(all.get(seen.len()..).unwrap_or_default());
            self.window.clear();
            self.emitted = 0;
        }
        Ok(text)
    }

    /// Emits the longest prefix of `pending` that is decided: whole
    /// characters, and U+FFFD for bytes that can never become one.
    fn take_complete_chars(&mut self) -> String {
        let mut text = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(valid) => {
                    text.push_str(valid);
                    start = self.pending.len();
                    break;
                }
                Err(error) => {
                    let valid_end = start + error.valid_up_to();
                    text.push_str(&String::from_utf8_lossy(&self.pending[start..valid_end]));
                    match error.error_len() {
                        Some(invalid) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            start = valid_end + invalid;
                        }
                        // An incomplete character at the end: wait for more.
                        None => {
                            start = valid_end;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        text
    }

    fn push_window(&mut self, id: u32) -> Result<String> {
        self.window.push(id);
        let seen = self.tokenizer.decode_with(&self.window[..self.emitted], self.skip_special)?;
        let all = self.tokenizer.decode_with(&self.window, self.skip_special)?;
        if all.len() <= seen.len() || all.ends_with(char::REPLACEMENT_CHARACTER) || !all.is_char_boundary(seen.len()) {
            return Ok(String::new());
        }
        let text = all[seen.len()..].to_string();
        // Keep the last emitted ids as context: decoders such as Metaspace
        // treat the first token of a sequence differently.
        let keep_from = self.emitted;
        self.window.drain(..keep_from);
        self.emitted = self.window.len();
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_a_bijection_with_gpt2_space_and_newline() {
        let decoder = byte_level_decoder();
        assert_eq!(decoder.len(), 256);
        assert_eq!(decoder[&'Ġ'], b' ');
        assert_eq!(decoder[&'Ċ'], b'\n');
        assert_eq!(decoder[&'ĉ'], b'\t');
        assert_eq!(decoder[&'A'], b'A');
        let mut bytes: Vec<u8> = decoder.values().copied().collect();
        bytes.sort();
        assert_eq!(bytes, (0..=255).collect::<Vec<u8>>());
    }

    #[test]
    fn unknown_gguf_types_are_errors() {
        let vocab = GgufVocab { model: "llama".into(), ..Default::default() };
        let error = Tokenizer::from_gguf_parts(vocab).unwrap_err().to_string();
        assert!(error.contains("'llama'"), "{error}");
        let vocab = GgufVocab { model: "gpt2".into(), pre: Some("mystery".into()), ..Default::default() };
        let error = Tokenizer::from_gguf_parts(vocab).unwrap_err().to_string();
        assert!(error.contains("'mystery'"), "{error}");
    }

    #[test]
    fn bad_merges_and_ids_are_errors() {
        let tokens: Vec<String> = ["a", "b", "ab"].iter().map(|s| s.to_string()).collect();
        let base = GgufVocab {
            model: "gpt2".into(),
            pre: Some("gpt-2".into()),
            tokens,
            merges: vec!["a b".into()],
            ..Default::default()
        };
        assert!(Tokenizer::from_gguf_parts(base.clone()).is_ok());
        let no_space = GgufVocab { merges: vec!["ab".into()], ..base.clone() };
        assert!(Tokenizer::from_gguf_parts(no_space).is_err());
        let unknown_piece = GgufVocab { merges: vec!["a c".into()], ..base.clone() };
        assert!(Tokenizer::from_gguf_parts(unknown_piece).is_err());
        let bad_bos = GgufVocab { bos_id: Some(7), ..base.clone() };
        assert!(Tokenizer::from_gguf_parts(bad_bos).is_err());
        let short_types = GgufVocab { token_types: Some(vec![1]), ..base.clone() };
        assert!(Tokenizer::from_gguf_parts(short_types).is_err());
        let tokenizer = Tokenizer::from_gguf_parts(base).unwrap();
        assert!(tokenizer.decode(&[99]).is_err());
    }
}
