//! `deltallm eval` from start to end: read the task's data and tokenize
//! it, load the model with a context as long as the longest sequence the
//! task runs, then score it once with the DeltaLLM settings given or under
//! every combination of a sweep. Results go to `out` (the CLI's stdout) and
//! to JSON, CSV and SVG files; progress and the files written go to `log`.

use super::{GpuSource, LogitSource, TaskReport, mc, ppl, squad, sweep};
use crate::engine::{Engine, ModelFiles};
use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::model::DeltaOptions;
use crate::settings::ModelSettings;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    Ppl,
    Mc,
    Squad2,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Ppl => "ppl",
            Task::Mc => "mc",
            Task::Squad2 => "squad2",
        }
    }
}

/// What to score and where the results go (the flags of `deltallm eval`).
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub task: Task,
    /// The task's data file.
    pub data: PathBuf,
    /// ppl: tokens per chunk; each chunk starts from an empty cache.
    pub ctx: usize,
    /// ppl: use only the first N tokens of the text.
    pub limit_tokens: Option<usize>,
    /// Score only the first N items (ppl: chunks).
    pub limit: Option<usize>,
    /// The report with per-item results (with a sweep, also the prefix of the CSV and SVG).
    pub json: Option<PathBuf>,
    /// `KNOB=V1,V2,…` per swept knob ([`sweep::Axis`]).
    pub sweep: Vec<String>,
    /// With a sweep: write PREFIX.csv, PREFIX.json and PREFIX.svg.
    pub out: Option<PathBuf>,
    /// squad2: what the model is told to answer when the context lacks the answer.
    pub unanswerable: String,
}

/// An evaluation checked and with its data file read: what can fail before
/// the (slow) model load has failed.
pub struct Eval {
    options: EvalOptions,
    axes: Vec<sweep::Axis>,
    text: String,
}

/// The task's data, tokenized.
enum Data {
    Ppl(Vec<u32>),
    Mc(Vec<mc::McItem>, Vec<[mc::EncodedOption; 2]>),
    /// Questions, their prompt tokens, and the ids that end an answer.
    Squad(Vec<squad::SquadItem>, Vec<Vec<u32>>, Vec<u32>),
}

impl Eval {
    /// Parse the sweep, check `settings` and read the data file.
    pub fn prepare(options: EvalOptions, settings: &ModelSettings) -> Result<Eval> {
        let axes = options.sweep.iter().map(|s| s.parse()).collect::<Result<_>>()?;
        settings.validate()?;
        let text = std::fs::read_to_string(&options.data)
            .map_err(|e| Error::Invalid(format!("reading --data {}: {e}", options.data.display())))?;
        Ok(Eval { options, axes, text })
    }

    fn ppl_options(&self) -> ppl::PplOptions {
        let o = &self.options;
        ppl::PplOptions { ctx: o.ctx, limit_tokens: o.limit_tokens, limit: o.limit, progress: true }
    }

    /// The tokenized data and the longest sequence it runs through the model.
    fn tokenize(&self, files: &ModelFiles) -> Result<(Data, usize)> {
        let tokenizer = files.tokenizer.as_ref().ok_or_else(|| Error::Invalid("the model has no tokenizer".into()))?;
        let limit = self.options.limit.unwrap_or(usize::MAX);
        Ok(match self.options.task {
            Task::Ppl => {
                let ids = tokenizer.encode(&self.text, true)?;
                let longest = ppl::chunks(&ids, &self.ppl_options())?.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
                (Data::Ppl(ids), longest)
            }
            Task::Mc => {
                let mut items = mc::parse_jsonl(&self.text)?;
                items.truncate(limit);
                let encoded = mc::encode_items(tokenizer, &items)?;
                let longest = encoded.iter().flatten().map(|o| o.tokens.len()).max().unwrap_or(0);
                (Data::Mc(items, encoded), longest)
            }
            Task::Squad2 => {
                let mut items = squad::parse(&self.text)?;
                items.truncate(limit);
                let template = files.chat_template.as_ref();
                let prompts = items
                    .iter()
                    .map(|item| squad::encode(tokenizer, template, item, &self.options.unanswerable))
                    .collect::<Result<Vec<_>>>()?;
                // An answer ends at a stop token or at the first line break.
                let mut stop = tokenizer.stop_ids().to_vec();
                if let [newline] = tokenizer.encode("\n", false)?.as_slice() {
                    stop.push(*newline);
                }
                let longest = prompts.iter().map(Vec::len).max().unwrap_or(0) + squad::MAX_ANSWER_TOKENS;
                (Data::Squad(items, prompts, stop), longest)
            }
        })
    }

    /// Load the model of `files` (read from `path`) on the GPU `gpu`
    /// describes and score it.
    pub fn run(
        &self,
        path: &Path,
        files: ModelFiles,
        gpu: &GpuOptions,
        settings: &ModelSettings,
        out: &mut dyn Write,
        log: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let (data, longest) = self.tokenize(&files)?;
        let architecture = files.weights.config.architecture;
        // squad2 decodes greedily: only the last row's argmax is needed.
        let all_logits = self.options.task != Task::Squad2;
        let mut options = settings.model_options(architecture, all_logits)?;
        options.max_context = (longest as u32).max(settings.context);
        if options.delta.is_none() && !self.axes.is_empty() {
            options.delta = Some(DeltaOptions::for_architecture(architecture));
        }
        let delta = options.delta.clone();
        let Engine { gpu, mut model, tokenizer, .. } = Engine::open(gpu, files, options, &settings.routing)?;
        log(&format!("{:?} on {} ({:?})", architecture, gpu.info.name, gpu.info.backend));

        let tokenizer = tokenizer.as_ref().ok_or_else(|| Error::Invalid("the model has no tokenizer".into()))?;
        let (ppl_options, o) = (self.ppl_options(), &self.options);
        let task = |source: &mut dyn LogitSource| -> Result<TaskReport> {
            match &data {
                Data::Ppl(ids) => ppl::perplexity(source, ids, &ppl_options),
                Data::Mc(items, encoded) => mc::evaluate(source, items, encoded, o.limit, true),
                Data::Squad(items, prompts, stop) => {
                    squad::evaluate(source, tokenizer, items, prompts, &o.unanswerable, stop, o.limit, true)
                }
            }
        };
        let model_name = path.display().to_string();
        let data_name = o.data.display().to_string();
        let io = |e: std::io::Error| Error::Io { path: "stdout".into(), source: e };
        if self.axes.is_empty() {
            let report = task(&mut GpuSource { gpu: &gpu, model: &mut model })?;
            writeln!(
                out,
                "{} on {data_name}: {} {:.4} ({} {} scored, {:.1} tok/s)",
                o.task.name(),
                report.metric_name,
                report.metric,
                report.scored,
                if o.task == Task::Ppl { "tokens" } else { "items" },
                report.tokens_per_second
            )
            .map_err(io)?;
            if let Some(s) = &report.sparsity {
                let t = &s.phases.total;
                writeln!(
                    out,
                    "DeltaLLM: delta sparsity {:.1} %, MAC sparsity {:.1} % (prefill {:.1} %, decode {:.1} %), authors' {:.1} %, K bytes {:.1} % of dense f16",
                    100.0 * t.delta_sparsity,
                    100.0 * t.mac_sparsity,
                    100.0 * s.phases.prefill.mac_sparsity,
                    100.0 * s.phases.decode.mac_sparsity,
                    100.0 * t.authors_sparsity,
                    100.0 * s.k_cache_ratio
                )
                .map_err(io)?;
            }
            if let Some(json_path) = &o.json {
                let object = serde_json::json!({
                    "model": model_name,
                    "data": data_name,
                    "delta": delta.as_ref().map(|d| format!("{d:?}")),
                    "thresholds": model.delta_thresholds(),
                    "report": report,
                });
                write_file(json_path, &pretty(&object)?, log)?;
            }
            return Ok(());
        }

        let base = delta.expect("a sweep turns DeltaLLM on");
        let rows = sweep::run(&gpu, &mut model, &base, &self.axes, &mut |s| task(s), log)?;
        write!(out, "{}", sweep::table(&rows)).map_err(io)?;
        let prefix = match (&o.out, &o.json) {
            (Some(p), _) => p.clone(),
            (None, Some(j)) => j.with_extension(""),
            (None, None) => PathBuf::from(format!("eval-{}-sweep", o.task.name())),
        };
        let with_ext = |ext: &str| PathBuf::from(format!("{}.{ext}", prefix.display()));
        let file_name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let title = format!("{} of {} on {}", rows[0].report.metric_name, file_name(path), file_name(&o.data));
        write_file(&with_ext("csv"), &sweep::csv(&rows), log)?;
        let object = serde_json::json!({
            "model": model_name,
            "data": data_name,
            "base": format!("{base:?}"),
            "rows": rows,
        });
        write_file(o.json.as_ref().unwrap_or(&with_ext("json")), &pretty(&object)?, log)?;
        write_file(&with_ext("svg"), &sweep::svg(&rows, &title), log)?;
        Ok(())
    }
}

fn pretty(value: &serde_json::Value) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(format!("writing the report as JSON: {e}")))
}

fn write_file(path: &Path, contents: &str, log: &mut dyn FnMut(&str)) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| Error::Invalid(format!("writing {}: {e}", path.display())))?;
    log(&format!("wrote {}", path.display()));
    Ok(())
}
