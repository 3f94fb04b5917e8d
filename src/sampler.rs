//! Choosing the next token from logits on the CPU: greedy, temperature,
//! top-k, top-p (nucleus) and repetition penalty, with a seed.
//!
//! The steps, in the order Hugging Face's `generate` applies them:
//! 1. repetition penalty on every token in `recent_tokens` (once per distinct
//!    token): a positive logit is divided by the penalty, a negative one
//!    multiplied, so the token always becomes less likely for penalty > 1;
//! 2. temperature 0 ends here with the argmax (greedy); otherwise logits are
//!    divided by the temperature;
//! 3. top-k keeps the k largest (k = 0 keeps all);
//! 4. top-p keeps the smallest prefix of the sorted tokens whose probability
//!    reaches `top_p` (at least one token);
//! 5. one draw from the softmax of what is left.
//!
//! Equal logits order by lower token id, and NaN logits are never chosen, as
//! in [`crate::cpu::sampling`]. The random numbers come from a small
//! splitmix64 generator written here, so a seed gives the same stream on
//! every platform, wasm included.
//!
//! With the GPU top-k ([`crate::ops::sampling::TopK`]) a decode step reads
//! back only k candidates and calls [`Sampler::sample_candidates`]. That is
//! exact for greedy and for top-k sampling with a GPU k at least the
//! sampler's `top_k`, except that a penalised candidate could fall below a
//! token that was not read back.

use crate::cpu::sampling::{NONE, best_of, top_k_of};

/// How to sample. `Default` is greedy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 (or anything not positive and finite) is greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the most likely tokens until their probability reaches this;
    /// 1 (or more, or NaN) keeps all, 0 keeps only the most likely.
    pub top_p: f32,
    /// Above 1 makes tokens in `recent_tokens` less likely; 1 (or anything
    /// not positive and finite) is off.
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0 }
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): 64 bits of state, passes BigCrush,
/// integer-only so it is bit-identical everywhere.
#[derive(Clone, Debug)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seeded sampler; keep one per generation so its random stream continues.
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: SplitMix64,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Self {
        Sampler { config, rng: SplitMix64 { state: config.seed } }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// The next token from a full row of logits (one per vocabulary entry).
    /// Returns [`NONE`] only if no logit is a number.
    pub fn sample(&mut self, logits: &[f32], recent_tokens: &[u32]) -> u32 {
        let penalty = self.penalty();
        if penalty == 1.0 {
            let pairs = logits.iter().enumerate().map(|(id, &v)| (id as u32, v));
            return self.sample_pairs(pairs);
        }
        // Only the few recent tokens change; patch them into a copy.
        let mut penalised = logits.to_vec();
        for &token in recent_tokens {
            if let Some(v) = logits.get(token as usize) {
                penalised[token as usize] = penalise(*v, penalty);
            }
        }
        let pairs = penalised.iter().enumerate().map(|(id, &v)| (id as u32, v));
        self.sample_pairs(pairs)
    }

    /// The next token from (id, logit) candidates, e.g. the GPU top-k read
    /// back; ids equal to [`NONE`] (padding) are skipped. Returns [`NONE`]
    /// only if no candidate is a number.
    pub fn sample_candidates(&mut self, candidates: &[(u32, f32)], recent_tokens: &[u32]) -> u32 {
        let penalty = self.penalty();
        let pairs = candidates.iter().filter(|(id, _)| *id != NONE).map(|&(id, v)| {
            if penalty != 1.0 && recent_tokens.contains(&id) { (id, penalise(v, penalty)) } else { (id, v) }
        });
        self.sample_pairs(pairs)
    }

    fn penalty(&self) -> f32 {
        let p = self.config.repetition_penalty;
        if p.is_finite() && p > 0.0 { p } else { 1.0 }
    }

    fn greedy(&self) -> bool {
        let t = self.config.temperature;
        !(t.is_finite() && t > 0.0)
    }

    /// Steps 2..5 of the module doc on penalised (id, logit) pairs.
    fn sample_pairs(&mut self, pairs: impl Iterator<Item = (u32, f32)>) -> u32 {
        if self.greedy() || self.config.top_k == 1 {
            return best_of(pairs).map_or(NONE, |(id, _)| id);
        }
        let keep = if self.config.top_k == 0 { usize::MAX } else { self.config.top_k };
        // Sorted best first, NaN dropped.
        let mut kept = top_k_of(pairs, keep);
        let Some(&(best_id, best_logit)) = kept.first() else {
            return NONE;
        };
        if best_logit.is_infinite() {
            // exp() is undefined or zero everywhere: the best token is the only sensible answer.
            return best_id;
        }
        let inverse_temperature = 1.0 / self.config.temperature as f64;
        let mut weights: Vec<f64> =
            kept.iter().map(|&(_, v)| ((v as f64 - best_logit as f64) * inverse_temperature).exp()).collect();
        let total: f64 = weights.iter().sum();
        let top_p = self.config.top_p;
        if top_p < 1.0 {
            // Keep token i while the probability before it is still short of top_p.
            let target = top_p.max(0.0) as f64 * total;
            let mut before = 0.0;
            let mut len = 0;
            while len < weights.len() && (len == 0 || before < target) {
                before += weights[len];
                len += 1;
            }
            weights.truncate(len);
            kept.truncate(len);
        }
        let total: f64 = weights.iter().sum();
        let mut remaining = self.rng.next_f64() * total;
        for (i, w) in weights.iter().enumerate() {
            if remaining < *w {
                return kept[i].0;
            }
            remaining -= w;
        }
        // Rounding left a sliver past the last weight.
        kept.last().map_or(NONE, |p| p.0)
    }
}

/// Hugging Face's repetition penalty: always moves the logit down for penalty > 1.
fn penalise(logit: f32, penalty: f32) -> f32 {
    if logit > 0.0 { logit / penalty } else { logit * penalty }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::sampling::argmax;

    fn random_logits(seed: u64, n: usize) -> Vec<f32> {
        let mut rng = SplitMix64 { state: seed };
        (0..n).map(|_| (rng.next_f64() * 8.0 - 4.0) as f32).collect()
    }

    fn sampling(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplerConfig {
        SamplerConfig { temperature, top_k, top_p, repetition_penalty: 1.0, seed }
    }

    fn softmax(logits: &[f32]) -> Vec<f64> {
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = logits.iter().map(|&v| (v as f64 - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    fn frequencies(sampler: &mut Sampler, logits: &[f32], recent: &[u32], draws: usize) -> Vec<f64> {
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..draws {
            counts[sampler.sample(logits, recent) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    #[test]
    fn greedy_is_argmax() {
        for seed in 1..20 {
            let logits = random_logits(seed, 1000);
            let mut sampler = Sampler::new(SamplerConfig { seed, ..Default::default() });
            assert_eq!(sampler.sample(&logits, &[]), argmax(&logits).unwrap());
        }
        let mut sampler = Sampler::new(SamplerConfig::default());
        assert_eq!(sampler.sample(&[1.0, 3.0, f32::NAN, 3.0], &[]), 1);
        assert_eq!(sampler.sample(&[f32::NAN], &[]), NONE);
        assert_eq!(sampler.sample(&[], &[]), NONE);
    }

    #[test]
    fn same_seed_same_tokens_different_seed_different_tokens() {
        let logits = random_logits(7, 500);
        let run = |seed| {
            let mut sampler = Sampler::new(sampling(1.5, 0, 1.0, seed));
            (0..64).map(|_| sampler.sample(&logits, &[])).collect::<Vec<u32>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        for seed in 1..20 {
            let logits = random_logits(100 + seed, 300);
            let best = argmax(&logits).unwrap();
            let mut top1 = Sampler::new(sampling(1.0, 1, 1.0, seed));
            let mut tiny_p = Sampler::new(sampling(1.0, 0, 1e-6, seed));
            let mut zero_p = Sampler::new(sampling(1.0, 40, 0.0, seed));
            for _ in 0..10 {
                assert_eq!(top1.sample(&logits, &[]), best);
                assert_eq!(tiny_p.sample(&logits, &[]), best);
                assert_eq!(zero_p.sample(&logits, &[]), best);
            }
        }
    }

    #[test]
    fn temperature_one_matches_softmax() {
        let logits = [1.0f32, 2.0, 0.5, -1.0];
        let mut sampler = Sampler::new(sampling(1.0, 0, 1.0, 2024));
        let draws = 200_000;
        let got = frequencies(&mut sampler, &logits, &[], draws);
        for (g, p) in got.iter().zip(softmax(&logits)) {
            // Binomial standard deviation is below 0.0012 here; allow ~4 of them.
            assert!((g - p).abs() < 0.005, "frequency {g} vs probability {p}");
        }
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        let logits = [1.0f32, 2.0, 0.5, -1.0];
        let cold = frequencies(&mut Sampler::new(sampling(0.5, 0, 1.0, 5)), &logits, &[], 50_000);
        let hot = frequencies(&mut Sampler::new(sampling(2.0, 0, 1.0, 5)), &logits, &[], 50_000);
        let scaled = |t: f32| softmax(&logits.map(|v| v / t));
        for (g, p) in cold.iter().zip(scaled(0.5)).chain(hot.iter().zip(scaled(2.0))) {
            assert!((g - p).abs() < 0.01, "frequency {g} vs probability {p}");
        }
    }

    #[test]
    fn top_k_and_top_p_never_pick_outside_the_kept_set() {
        let logits = [1.0f32, 2.0, 0.5, -1.0, 1.5];
        // Probabilities ~ [0.18, 0.48, 0.11, 0.02, 0.29]: top-2 is {1, 4}.
        let mut top2 = Sampler::new(sampling(1.0, 2, 1.0, 9));
        let mut nucleus = Sampler::new(sampling(1.0, 0, 0.7, 9));
        for _ in 0..2000 {
            assert!([1, 4].contains(&top2.sample(&logits, &[])));
            assert!([1, 4].contains(&nucleus.sample(&logits, &[])));
        }
    }

    #[test]
    fn repetition_penalty_lowers_a_repeated_token() {
        let logits = [1.0f32, 2.0, 0.5, -1.0];
        let config = SamplerConfig { repetition_penalty: 1.5, ..sampling(1.0, 0, 1.0, 77) };
        let draws = 50_000;
        let plain = frequencies(&mut Sampler::new(sampling(1.0, 0, 1.0, 77)), &logits, &[], draws);
        // Token 1 twice in the history: penalised once, like Hugging Face.
        let penalised = frequencies(&mut Sampler::new(config), &logits, &[1, 3, 1], draws);
        let mut expected = logits;
        expected[1] = 2.0 / 1.5;
        expected[3] = -1.5;
        assert!(penalised[1] < plain[1] - 0.05);
        for (g, p) in penalised.iter().zip(softmax(&expected)) {
            assert!((g - p).abs() < 0.01, "frequency {g} vs probability {p}");
        }
        // Greedy changes its answer once the leader is penalised enough.
        let greedy = SamplerConfig { repetition_penalty: 3.0, ..Default::default() };
        assert_eq!(Sampler::new(greedy).sample(&logits, &[]), 1);
        assert_eq!(Sampler::new(greedy).sample(&logits, &[1]), 0);
    }

    #[test]
    fn candidates_sample_like_the_full_vector() {
        let logits = random_logits(3, 2000);
        let candidates = crate::cpu::sampling::top_k(&logits, 40);
        let config = SamplerConfig { repetition_penalty: 1.3, ..sampling(0.8, 20, 0.9, 11) };
        // With the GPU's k = 40 above the sampler's top_k = 20, penalising can
        // only reorder tokens that were read back, so both paths agree exactly.
        let recent = [candidates[0].0, candidates[5].0, 17];
        let mut full = Sampler::new(config);
        let mut from_candidates = Sampler::new(config);
        for _ in 0..200 {
            assert_eq!(full.sample(&logits, &recent), from_candidates.sample_candidates(&candidates, &recent));
        }
        // GPU padding is ignored.
        let mut padded = candidates[..2].to_vec();
        padded.push((NONE, f32::NEG_INFINITY));
        let mut greedy = Sampler::new(SamplerConfig::default());
        assert_eq!(greedy.sample_candidates(&padded, &[]), candidates[0].0);
        assert_eq!(greedy.sample_candidates(&[(NONE, f32::NEG_INFINITY)], &[]), NONE);
    }

    #[test]
    fn splitmix64_matches_the_reference_stream() {
        // Outputs of a C transcription of Vigna's splitmix64.c; seed 0 gives
        // the widely quoted 0xe220a8397b1dcdaf.
        assert_eq!(SplitMix64 { state: 0 }.next_u64(), 0xe220_a839_7b1d_cdaf);
        let mut rng = SplitMix64 { state: 1234567 };
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
    }
}
