//! Chat templates: a list of `{role, content}` messages to the prompt text a
//! chat model was trained on.
//!
//! Models ship their template as Jinja source: `chat_template` in
//! `tokenizer_config.json`, or `tokenizer.chat_template` in a GGUF file. We
//! render it with minijinja set up the way Hugging Face's
//! `apply_chat_template` sets up Jinja2 (`trim_blocks`, `lstrip_blocks`,
//! loop controls, Python string methods such as `.strip()`, and the globals
//! `raise_exception` and `strftime_now`, a `tojson` that writes what Python's
//! `json.dumps` writes), so the prompt is the one the model expects, byte
//! for byte. Models without a template get [`ChatTemplate::bitnet`] or
//! [`ChatTemplate::llama3`].

use crate::{Error, Result};
use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind};

const TEMPLATE_NAME: &str = "chat_template";

/// BitNet b1.58 2B4T's prompt form (docs/DESIGN.md §3): `Role: content<|eot_id|>`
/// per message after BOS, then `Assistant: ` to ask for the reply.
const BITNET_TEMPLATE: &str = "{{ bos_token }}\
{% for message in messages %}{{ message.role | capitalize }}: {{ message.content }}<|eot_id|>{% endfor %}\
{% if add_generation_prompt %}Assistant: {% endif %}";

/// Llama 3 Instruct's prompt form: a header per message, content trimmed
/// as Meta's template does, and an open assistant header to ask for the reply.
const LLAMA3_TEMPLATE: &str = "{{ bos_token }}\
{% for message in messages %}<|start_header_id|>{{ message.role }}<|end_header_id|>\n\n\
{{ message.content | trim }}<|eot_id|>{% endfor %}\
{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

const LLAMA3_BOS: &str = "<|begin_of_text|>";

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant` (templates may know others).
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    fn to_value(&self) -> Value {
        Value::from_pairs([("role", Value::from(self.role.as_str())), ("content", Value::from(self.content.as_str()))])
    }
}

/// A compiled chat template with the special-token strings it refers to.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    environment: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

fn template_error(context: &str, error: impl std::fmt::Display) -> Error {
    Error::ChatTemplate(format!("{context}: {error}"))
}

impl ChatTemplate {
    /// Compiles Jinja template source, e.g. a GGUF's `tokenizer.chat_template`.
    /// `bos_token` and `eos_token` are the strings the template may print.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut environment = Environment::new();
        environment.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| template_error("setting up Jinja syntax", e))?,
        );
        environment.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        environment.add_function("raise_exception", raise_exception);
        environment.add_filter("tojson", tojson);
        let mut template = Self { environment, bos_token: bos_token.to_string(), eos_token: eos_token.to_string() };
        template.set_clock(None);
        template
            .environment
            .add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| template_error("the template does not compile", e))?;
        Ok(template)
    }

    /// The template from a GGUF file's `tokenizer.chat_template`.
    pub fn from_gguf(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        Self::new(source, bos_token, eos_token)
    }

    /// The template from a Hugging Face `tokenizer_config.json`: its
    /// `chat_template` (a string, or a list of `{name, template}` from which
    /// `default` is taken) with its `bos_token` and `eos_token`.
    pub fn from_tokenizer_config(json: &str) -> Result<Self> {
        let config: serde_json::Value =
            serde_json::from_str(json).map_err(|e| template_error("tokenizer_config.json is not valid JSON", e))?;
        let source = match config.get("chat_template") {
            Some(serde_json::Value::String(source)) => source.clone(),
            Some(serde_json::Value::Array(named)) => {
                let template_named = |wanted: Option<&str>| {
                    named.iter().find_map(|entry| {
                        let name = entry.get("name")?.as_str()?;
                        let source = entry.get("template")?.as_str()?;
                        (wanted.is_none_or(|w| w == name)).then(|| source.to_string())
                    })
                };
                template_named(Some("default")).or_else(|| template_named(None)).ok_or_else(|| {
                    Error::ChatTemplate(
                        "tokenizer_config.json's chat_template list has no {name, template} entry".into(),
                    )
                })?
            }
            Some(_) => {
                return Err(Error::ChatTemplate(
                    "tokenizer_config.json's chat_template is neither a string nor a list".into(),
                ));
            }
            None => {
                return Err(Error::ChatTemplate(
                    "tokenizer_config.json has no chat_template; use ChatTemplate::llama3() or \
                     ChatTemplate::bitnet()"
                        .into(),
                ));
            }
        };
        // Special tokens are written either as strings or as AddedToken
        // objects with a `content` field.
        let token_text = |key: &str| match config.get(key) {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(object) => object.get("content").and_then(|c| c.as_str()).unwrap_or_default().to_string(),
            None => String::new(),
        };
        Self::new(&source, &token_text("bos_token"), &token_text("eos_token"))
    }

    /// BitNet b1.58 2B4T's prompt form, for models that ship no template.
    pub fn bitnet() -> Self {
        Self::new(BITNET_TEMPLATE, LLAMA3_BOS, "<|eot_id|>").expect("built-in template compiles")
    }

    /// Llama 3 Instruct's prompt form, for models that ship no template.
    pub fn llama3() -> Self {
        Self::new(LLAMA3_TEMPLATE, LLAMA3_BOS, "<|eot_id|>").expect("built-in template compiles")
    }

    /// Pins the clock `strftime_now` reads (seconds since the Unix epoch),
    /// for reproducible prompts, or where there is no system clock (wasm).
    pub fn with_clock(mut self, unix_seconds: i64) -> Self {
        self.set_clock(Some(unix_seconds));
        self
    }

    fn set_clock(&mut self, pinned: Option<i64>) {
        self.environment
            .add_function("strftime_now", move |format: String| Ok(strftime(&format, pinned.unwrap_or_else(unix_now))));
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// The prompt for `messages`; with `add_generation_prompt`, ending in
    /// the opening of the assistant's reply.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template =
            self.environment.get_template(TEMPLATE_NAME).map_err(|e| template_error("template missing", e))?;
        let messages: Vec<Value> = messages.iter().map(Message::to_value).collect();
        // Hugging Face passes `tools` and `documents` as None when unused;
        // templates test `tools is not none`, which undefined would pass.
        let context = Value::from_pairs([
            ("messages", Value::from(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("bos_token", Value::from(self.bos_token.as_str())),
            ("eos_token", Value::from(self.eos_token.as_str())),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
        ]);
        template.render(context).map_err(|e| template_error("rendering failed", DetailedError(e)))
    }
}

/// Shows a minijinja error with its causes (e.g. the message given to
/// `raise_exception`).
struct DetailedError(minijinja::Error);

impl std::fmt::Display for DetailedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = std::error::Error::source(&self.0);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// `raise_exception(message)`: templates call it to reject a conversation.
fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `tojson` as Hugging Face defines it: `json.dumps(value, ensure_ascii=False,
/// indent=indent)`, so `", "` and `": "` separators, keys in order, and no
/// HTML escaping (minijinja's own escapes `<` for HTML).
fn tojson(value: &Value, indent: Option<usize>, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    let indent = match kwargs.get::<Option<usize>>("indent")? {
        Some(i) => Some(i),
        None => indent,
    };
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let result = match indent {
        Some(width) => {
            let spaces = " ".repeat(width);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(spaces.as_bytes());
            serde::Serialize::serialize(value, &mut serde_json::Serializer::with_formatter(&mut out, formatter))
        }
        None => serde::Serialize::serialize(
            value,
            &mut serde_json::Serializer::with_formatter(&mut out, PythonJsonFormatter),
        ),
    };
    result.map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let text = String::from_utf8(out)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    Ok(Value::from_safe_string(text))
}

/// Python's default `json.dumps` layout: `{"a": 1, "b": [1, 2]}`.
struct PythonJsonFormatter;

impl serde_json::ser::Formatter for PythonJsonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// Seconds since the Unix epoch; wasm32 in a browser has no system clock
/// here, so it reads as the epoch unless [`ChatTemplate::with_clock`] pins one.
fn unix_now() -> i64 {
    #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
    {
        web_time::SystemTime::now().duration_since(web_time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    {
        0
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01, in the
/// proleptic Gregorian calendar (days in 400-year eras of 146097 days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // from 0000-03-01, so leap days end a year
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The subset of C's `strftime` chat templates use (UTC): `%d %m %Y %y %b
/// %B %a %A %H %M %S %e %%`; other directives are copied through.
fn strftime(format: &str, unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let second_of_day = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let month_name = MONTHS[month as usize - 1];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('H') => out.push_str(&format!("{:02}", second_of_day / 3600)),
            Some('M') => out.push_str(&format!("{:02}", second_of_day / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", second_of_day % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_matches_known_dates() {
        assert_eq!(strftime("%d %b %Y", 0), "01 Jan 1970");
        // 2024-07-26 12:34:56 UTC, a Friday.
        assert_eq!(strftime("%A %d %B %Y %H:%M:%S %%", 1_721_997_296), "Friday 26 July 2024 12:34:56 %");
        // A leap day and the day after.
        assert_eq!(strftime("%Y-%m-%d", 1_709_164_800), "2024-02-29");
        assert_eq!(strftime("%Y-%m-%d %a", 1_709_251_200), "2024-03-01 Fri");
        assert_eq!(strftime("%y %e", 951_782_400), "00 29"); // 2000-02-29
    }

    #[test]
    fn tojson_writes_python_layout() {
        let template = ChatTemplate::new(
            "{{ {'name': 'f', 'args': [1, 'a<b'], 'deep': {'x': none}} | tojson }}|{{ [1] | tojson(indent=2) }}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            template.render(&[], false).unwrap(),
            "{\"name\": \"f\", \"args\": [1, \"a<b\"], \"deep\": {\"x\": null}}|[\n  1\n]"
        );
    }
}
