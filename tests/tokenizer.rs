//! Tokenizer and chat templates on the CPU, with a tiny byte-level BPE
//! vocabulary built here: the 256 byte characters, a few merges (some of
//! them ending inside a UTF-8 character), and the special tokens of the
//! Llama 3 and ChatML prompt forms. The same vocabulary is written as a
//! Hugging Face tokenizer.json and handed over as GGUF data, and both must
//! give the same ids.

use deltallm::tokenizer::{GgufVocab, LLAMA3_SPLIT_REGEX, token_type};
use deltallm::{ChatTemplate, Message, Tokenizer};
use serde_json::json;

/// Byte -> character of GPT-2's byte-level alphabet, written out
/// independently of the crate's table.
fn byte_char(byte: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(byte) {
        return char::from(byte);
    }
    let rank = (0..byte).filter(|&b| !printable(b)).count() as u32;
    char::from_u32(256 + rank).unwrap()
}

fn byte_string(text: &str) -> String {
    text.bytes().map(byte_char).collect()
}

/// Merges as text pairs; both halves and their join end up in the vocabulary.
fn merge_pairs() -> Vec<(String, String)> {
    let pairs: &[(&str, &str)] = &[
        (" ", "t"),
        ("h", "e"),
        (" t", "he"),
        ("l", "l"),
        ("e", "ll"),
        ("h", "ell"),
        ("hell", "o"),
        (" ", "w"),
        ("1", "2"),
        ("12", "3"),
        ("\n", "\n"),
        (" ", " "),
        ("'", "s"),
        ("i", "t"),
        // Pieces of multi-byte characters: é = C3 A9, 中 = E4 B8 AD,
        // 😀 = F0 9F 98 80 (so the emoji is always split across tokens).
        ("\u{c3}", "\u{a9}"),
        ("\u{e4}", "\u{b8}"),
        ("\u{f0}", "\u{9f}"),
    ];
    let raw = |s: &str| -> String {
        // Characters below U+0100 stand for the byte of that value.
        s.chars().map(|c| byte_char(c as u32 as u8)).collect()
    };
    pairs.iter().map(|(a, b)| (raw(a), raw(b))).collect()
}

const SPECIALS: &[&str] = &[
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|im_start|>",
    "<|im_end|>",
];

/// A whole word reachable by no merge: found only when the tokenizer looks
/// pre-tokens up before merging (Llama 3's `ignore_merges`).
const WHOLE_WORD: &str = "world";

struct TinyVocab {
    tokens: Vec<String>,
    merges: Vec<String>,
    types: Vec<i32>,
}

fn tiny_vocab() -> TinyVocab {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    let mut merges = Vec::new();
    for (left, right) in merge_pairs() {
        merges.push(format!("{left} {right}"));
        let joined = format!("{left}{right}");
        if !tokens.contains(&joined) {
            tokens.push(joined);
        }
    }
    tokens.push(WHOLE_WORD.to_string());
    let mut types = vec![token_type::NORMAL; tokens.len()];
    for special in SPECIALS {
        tokens.push(special.to_string());
        types.push(token_type::CONTROL);
    }
    TinyVocab { tokens, merges, types }
}

#[derive(Clone, Copy, Debug)]
enum Pre {
    /// Llama 3 / BitNet: regex split, BOS added, ignore_merges.
    Llama3,
    /// SmolLM2: digits split one by one, then GPT-2's regex; no BOS.
    SmolLm,
}

fn tokenizer_json(pre: Pre) -> String {
    let vocab = tiny_vocab();
    let id = |t: &str| vocab.tokens.iter().position(|x| x == t).unwrap();
    let added: Vec<_> = SPECIALS
        .iter()
        .map(|s| {
            json!({"id": id(s), "content": s, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let model_vocab: serde_json::Map<String, serde_json::Value> =
        vocab.tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let (pre_tokenizer, post_processor, ignore_merges) = match pre {
        Pre::Llama3 => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT_REGEX},
                 "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                 "use_regex": false}]}),
            json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>",
                    "ids": [id("<|begin_of_text|>")], "tokens": ["<|begin_of_text|>"]}}}),
            true,
        ),
        Pre::SmolLm => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                 "use_regex": true}]}),
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false,
                   "use_regex": true}),
            false,
        ),
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
                  "vocab": model_vocab, "merges": vocab.merges}
    })
    .to_string()
}

fn from_json(pre: Pre) -> Tokenizer {
    Tokenizer::from_bytes(tokenizer_json(pre).as_bytes()).unwrap()
}

fn from_gguf(pre: Pre) -> Tokenizer {
    let vocab = tiny_vocab();
    let id = |t: &str| vocab.tokens.iter().position(|x| x == t).unwrap() as u32;
    let (pre_name, bos, eos) = match pre {
        Pre::Llama3 => ("llama-bpe", id("<|begin_of_text|>"), id("<|end_of_text|>")),
        Pre::SmolLm => ("smollm", id("<|im_start|>"), id("<|im_end|>")),
    };
    Tokenizer::from_gguf_parts(GgufVocab {
        model: "gpt2".into(),
        pre: Some(pre_name.into()),
        tokens: vocab.tokens.clone(),
        merges: vocab.merges.clone(),
        token_types: Some(vocab.types.clone()),
        bos_id: Some(bos),
        eos_id: Some(eos),
        add_bos: None,
    })
    .unwrap()
}

const TRICKY: &[&str] = &[
    "",
    "hello world",
    "Hello World",
    " leading space",
    "trailing spaces   ",
    "  both  ",
    "12345",
    "a1b22c333d4444",
    "line one\nline two\n\n\nend\n",
    "tabs\tand\r\nCRLF\r\n",
    "it's the thing's",
    "IT'S",
    "héllo café é",
    "中文字符 中",
    "emoji 😀🎉 mix 😀",
    "👩‍👩‍👧 family",
    "mixed 中😀é12 \n\t ",
    "<|im_start|>user\nhi<|im_end|>\n",
    "text<|eot_id|>more<|begin_of_text|>",
    "<|start_header_id|>",
];

fn names(tokenizer: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&id| tokenizer.id_to_token(id).unwrap()).collect()
}

#[test]
fn round_trips_tricky_strings() {
    for pre in [Pre::Llama3, Pre::SmolLm] {
        for tokenizer in [from_json(pre), from_gguf(pre)] {
            for text in TRICKY {
                let ids = tokenizer.encode(text, false).unwrap();
                assert_eq!(tokenizer.decode(&ids).unwrap(), *text, "{pre:?}: {ids:?}");
            }
        }
    }
}

#[test]
fn gguf_parts_give_the_same_ids_as_tokenizer_json() {
    for pre in [Pre::Llama3, Pre::SmolLm] {
        let (json, gguf) = (from_json(pre), from_gguf(pre));
        assert_eq!(json.vocab_size(), gguf.vocab_size());
        for text in TRICKY {
            for add_special in [false, true] {
                assert_eq!(
                    json.encode(text, add_special).unwrap(),
                    gguf.encode(text, add_special).unwrap(),
                    "{pre:?} {text:?} add_special={add_special}"
                );
            }
        }
    }
}

#[test]
fn special_tokens_are_single_ids() {
    for pre in [Pre::Llama3, Pre::SmolLm] {
        for tokenizer in [from_json(pre), from_gguf(pre)] {
            for special in SPECIALS {
                let id = tokenizer.token_to_id(special).unwrap();
                assert_eq!(tokenizer.encode(special, false).unwrap(), vec![id]);
                assert!(tokenizer.is_special(id));
            }
            let ids = tokenizer.encode("<|im_start|>user", false).unwrap();
            assert_eq!(ids[0], tokenizer.token_to_id("<|im_start|>").unwrap());
            assert_eq!(names(&tokenizer, &ids[1..]).concat(), "user");
        }
    }
}

#[test]
fn bos_only_where_the_model_adds_it() {
    for tokenizer in [from_json(Pre::Llama3), from_gguf(Pre::Llama3)] {
        let bos = tokenizer.token_to_id("<|begin_of_text|>").unwrap();
        assert_eq!(tokenizer.bos_id(), Some(bos));
        let with = tokenizer.encode("hello", true).unwrap();
        let without = tokenizer.encode("hello", false).unwrap();
        assert_eq!(with[0], bos);
        assert_eq!(&with[1..], &without[..]);
        assert_eq!(tokenizer.encode("", true).unwrap(), vec![bos]);
    }
    for tokenizer in [from_json(Pre::SmolLm), from_gguf(Pre::SmolLm)] {
        assert_eq!(tokenizer.encode("hello", true).unwrap(), tokenizer.encode("hello", false).unwrap());
    }
}

#[test]
fn pre_tokenizers_split_digits_and_words_like_their_models() {
    // Llama 3: digits in groups of three, whole words looked up first.
    let llama = from_gguf(Pre::Llama3);
    let ids = llama.encode("12345world", false).unwrap();
    assert_eq!(names(&llama, &ids), ["123", "4", "5", "world"]); // no "45" token
    // SmolLM2: every digit alone (the "12" merge is never reached); words
    // only through merges.
    let smol = from_gguf(Pre::SmolLm);
    let ids = smol.encode("12345world", false).unwrap();
    assert_eq!(names(&smol, &ids), ["1", "2", "3", "4", "5", "w", "o", "r", "l", "d"]);
    // Shared merges, and multi-byte pieces.
    let ids = llama.encode("hello the 中", false).unwrap();
    assert_eq!(names(&llama, &ids), ["hello", "Ġthe", "Ġ", "ä¸", &byte_string("中")[4..]]);
}

#[test]
fn stop_ids_include_end_of_turn_tokens() {
    let llama = from_gguf(Pre::Llama3);
    let id = |t| llama.token_to_id(t).unwrap();
    assert_eq!(llama.stop_ids()[0], id("<|end_of_text|>"));
    for token in ["<|eot_id|>", "<|im_end|>"] {
        assert!(llama.stop_ids().contains(&id(token)));
    }
    let overridden = llama.clone().with_special_ids(Some(id("<|im_start|>")), vec![id("<|eot_id|>")]);
    assert_eq!(overridden.stop_ids(), &[id("<|eot_id|>")]);
    assert_eq!(overridden.encode("x", true).unwrap()[0], id("<|im_start|>"));
}

fn stream_all(tokenizer: &Tokenizer, ids: &[u32], skip_special: bool) -> (String, Vec<String>) {
    let mut stream = tokenizer.stream(skip_special);
    let mut pieces: Vec<String> = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
    pieces.push(stream.finish().unwrap());
    (pieces.concat(), pieces)
}

#[test]
fn streaming_concatenates_to_decode() {
    for pre in [Pre::Llama3, Pre::SmolLm] {
        let tokenizer = from_gguf(pre);
        for text in TRICKY {
            let ids = tokenizer.encode(text, true).unwrap();
            for skip_special in [false, true] {
                let (streamed, pieces) = stream_all(&tokenizer, &ids, skip_special);
                let decoded = tokenizer.decode_with(&ids, skip_special).unwrap();
                assert_eq!(streamed, decoded, "{pre:?} {text:?}");
                assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')));
            }
        }
    }
}

#[test]
fn streaming_holds_split_characters_back() {
    let tokenizer = from_gguf(Pre::Llama3);
    let ids = tokenizer.encode("😀!", false).unwrap();
    // F0 9F | 98 | 80 | !
    assert_eq!(ids.len(), 4, "{:?}", names(&tokenizer, &ids));
    let (_, pieces) = stream_all(&tokenizer, &ids, false);
    assert_eq!(pieces, ["", "", "😀", "!", ""]);
}

#[test]
fn streaming_invalid_bytes_match_decode() {
    let tokenizer = from_gguf(Pre::Llama3);
    let piece = |bytes: &[u8]| -> u32 {
        let name: String = bytes.iter().map(|&b| byte_char(b)).collect();
        tokenizer.token_to_id(&name).unwrap()
    };
    let cases: Vec<Vec<u32>> = vec![
        vec![piece(&[0xF0, 0x9F]), piece(b"A")],           // cut short, then ASCII
        vec![piece(b"x"), piece(&[0xF0, 0x9F])],           // cut short at the end
        vec![piece(&[0x80]), piece(&[0xFF]), piece(b"o")], // never valid
        vec![piece(&[0xE4, 0xB8]), piece(&[0xF0, 0x9F]), piece(&[0x98]), piece(&[0x80])],
    ];
    for ids in cases {
        let (streamed, _) = stream_all(&tokenizer, &ids, false);
        assert_eq!(streamed, tokenizer.decode(&ids).unwrap(), "{ids:?}");
        assert!(streamed.contains('\u{FFFD}'));
    }
}

#[test]
fn streaming_works_for_tokenizer_json_too() {
    let tokenizer = from_json(Pre::SmolLm);
    let ids = tokenizer.encode("emoji 😀 中 é", false).unwrap();
    let (streamed, _) = stream_all(&tokenizer, &ids, false);
    assert_eq!(streamed, "emoji 😀 中 é");
    assert!(tokenizer.token_bytes(ids[0]).is_some());
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    assert!(Tokenizer::from_bytes(b"{not json").is_err());
    assert!(Tokenizer::from_bytes(b"{}").is_err());
    assert!(Tokenizer::from_bytes(br#"{"model": {"type": "BPE", "vocab": 3}}"#).is_err());
    let missing = Tokenizer::from_file("/nonexistent/tokenizer.json").unwrap_err();
    assert!(missing.to_string().contains("/nonexistent/tokenizer.json"), "{missing}");
    let tokenizer = from_gguf(Pre::Llama3);
    let out_of_range = tokenizer.vocab_size() as u32;
    assert!(tokenizer.decode(&[out_of_range]).is_err());
    assert!(tokenizer.stream(false).push(out_of_range).is_err());
    let mut missing_bos = GgufVocab {
        model: "gpt2".into(),
        pre: Some("llama-bpe".into()),
        tokens: tiny_vocab().tokens,
        merges: tiny_vocab().merges,
        ..Default::default()
    };
    assert!(Tokenizer::from_gguf_parts(missing_bos.clone()).is_err());
    missing_bos.add_bos = Some(false);
    assert!(Tokenizer::from_gguf_parts(missing_bos).is_ok());
}

// ---- chat templates ----

/// Meta's Llama 3.2 Instruct template without its tool-calling branches,
/// as the JSON-decoded text (Jinja string escapes `\n` left in).
const LLAMA32_TEMPLATE: &str = r#"{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if tools is not none %}
    {{- raise_exception("this test passes no tools") }}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- for message in messages %}
    {%- if message.role not in ['user', 'assistant'] %}
        {{- raise_exception("unknown role " + message.role) }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

/// 2024-07-26 12:34:56 UTC.
const JULY_26_2024: i64 = 1_721_997_296;

fn conversation() -> Vec<Message> {
    vec![
        Message::system("  You are terse. "),
        Message::user("Hi there"),
        Message::assistant("Hello!"),
        Message::user("What is 2+2?\n"),
    ]
}

#[test]
fn llama32_template_renders_exactly() {
    let template =
        ChatTemplate::from_gguf(LLAMA32_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>").unwrap().with_clock(JULY_26_2024);
    let prompt = template.render(&conversation(), true).unwrap();
    assert_eq!(
        prompt,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
         Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n\
         You are terse.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    let error = template.render(&[Message::new("tool", "x")], false).unwrap_err().to_string();
    assert!(error.contains("unknown role tool"), "{error}");
}

/// SmolLM2-Instruct's tokenizer_config.json, reduced to the fields we read.
const SMOLLM2_CONFIG: &str = r#"{
  "bos_token": "<|im_start|>",
  "eos_token": "<|im_end|>",
  "chat_template": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
}"#;

#[test]
fn smollm2_template_renders_exactly() {
    let template = ChatTemplate::from_tokenizer_config(SMOLLM2_CONFIG).unwrap();
    assert_eq!(template.bos_token(), "<|im_start|>");
    assert_eq!(template.eos_token(), "<|im_end|>");
    let prompt = template.render(&[Message::user("What is 2+2?")], true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let prompt = template.render(&conversation(), false).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\n  You are terse. <|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWhat is 2+2?\n<|im_end|>\n"
    );
    // The prompt's markers encode as single ids.
    let tokenizer = from_gguf(Pre::SmolLm);
    let ids = tokenizer.encode(&prompt, false).unwrap();
    assert_eq!(ids[0], tokenizer.token_to_id("<|im_start|>").unwrap());
    assert_eq!(tokenizer.decode(&ids).unwrap(), prompt);
}

#[test]
fn named_template_list_and_added_token_objects() {
    let config = r#"{
        "bos_token": {"content": "<s>", "special": true},
        "eos_token": {"content": "</s>"},
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}
        ]
    }"#;
    let template = ChatTemplate::from_tokenizer_config(config).unwrap();
    assert_eq!(template.render(&[Message::user("x")], false).unwrap(), "<s>x</s>");
}

#[test]
fn fallback_templates() {
    let bitnet = ChatTemplate::bitnet();
    assert_eq!(
        bitnet.render(&[Message::user("What is 2+2?")], true).unwrap(),
        "<|begin_of_text|>User: What is 2+2?<|eot_id|>Assistant: "
    );
    assert_eq!(
        bitnet.render(&conversation(), true).unwrap(),
        "<|begin_of_text|>System:   You are terse. <|eot_id|>User: Hi there<|eot_id|>\
         Assistant: Hello!<|eot_id|>User: What is 2+2?\n<|eot_id|>Assistant: "
    );
    let llama3 = ChatTemplate::llama3();
    assert_eq!(
        llama3.render(&conversation()[1..], true).unwrap(),
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(
        llama3.render(&[Message::user("hi")], false).unwrap(),
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
    );
    // The Llama 3 prompt starts with BOS as a single id, so encode it
    // without adding another.
    let tokenizer = from_gguf(Pre::Llama3);
    let prompt = llama3.render(&[Message::user("hello world")], true).unwrap();
    let ids = tokenizer.encode(&prompt, false).unwrap();
    assert_eq!(ids[0], tokenizer.bos_id().unwrap());
    assert_eq!(ids.iter().filter(|&&id| id == ids[0]).count(), 1);
}

#[test]
fn python_string_methods_and_loop_controls() {
    let source = "{% for m in messages %}{% if m.content.startswith('skip') %}{% continue %}{% endif %}\
                  [{{ m.role.upper() }}:{{ m.content.strip() }}]{% endfor %}";
    let template = ChatTemplate::new(source, "", "").unwrap();
    let messages = [Message::user("  a  "), Message::user("skip me"), Message::assistant("b")];
    assert_eq!(template.render(&messages, false).unwrap(), "[USER:a][ASSISTANT:b]");
}

#[test]
fn broken_templates_are_errors() {
    assert!(ChatTemplate::new("{% for m in messages %}", "", "").is_err());
    assert!(ChatTemplate::new("{{ unclosed ", "", "").is_err());
    let failing = ChatTemplate::new("{{ raise_exception('no system role please') }}", "", "").unwrap();
    let error = failing.render(&[], false).unwrap_err().to_string();
    assert!(error.contains("no system role please"), "{error}");
    let bad_call = ChatTemplate::new("{{ messages[0].content.nope() }}", "", "").unwrap();
    assert!(bad_call.render(&[Message::user("x")], false).is_err());
    assert!(ChatTemplate::from_tokenizer_config("{").is_err());
    assert!(ChatTemplate::from_tokenizer_config(r#"{"bos_token": "<s>"}"#).is_err());
    assert!(ChatTemplate::from_tokenizer_config(r#"{"chat_template": 3}"#).is_err());
    assert!(ChatTemplate::from_tokenizer_config(r#"{"chat_template": []}"#).is_err());
}
