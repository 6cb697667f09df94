//! Transformers' gradients as a training framework hands them to the all-reduce, built from
//! their architectures like [`super::resnet::resnet50`]: one tensor per parameter, in forward
//! order, each with the forward multiply-adds per sequence of the layer that owns it, and the
//! repeated block it belongs to (FSDP wraps one unit per block).
//!
//! Multiply-adds: every weight matrix is applied to every token (`elems * seq`); attention's
//! `Q K^T` and `A V` add `2 * seq^2 * d` per layer (the full square, as dense kernels compute
//! it, causal or not), put on the value weight, whose gradient the backward pass produces right
//! after them. A head tied to the embedding table puts its multiply-adds on the last tensor
//! before it in forward order (its backward runs first; the shared table's gradient is complete
//! only at the end). Embedding lookups, biases and norms count 0.

use super::resnet::Tensor;

/// The shapes of a transformer family member.
struct Shape {
    layers: u32,
    d: u64,
    ffn: u64,
    vocab: u64,
    seq: u64,
}

struct Builder {
    seq: u64,
    t: Vec<Tensor>,
}

impl Builder {
    /// A tensor of `elems` parameters whose layer does `macs_per_token` per token.
    fn push(&mut self, name: String, elems: u64, macs_per_token: f64, block: Option<u32>) {
        self.t.push(Tensor {
            name,
            elems,
            macs: macs_per_token * self.seq as f64,
            block,
        });
    }
    /// A linear layer `d_in -> d_out` on every token, with or without a bias.
    fn linear(&mut self, name: &str, d_in: u64, d_out: u64, bias: bool, block: Option<u32>) {
        self.push(
            format!("{name}.weight"),
            d_in * d_out,
            (d_in * d_out) as f64,
            block,
        );
        if bias {
            self.push(format!("{name}.bias"), d_out, 0.0, block);
        }
    }
    /// A norm's parameters (LayerNorm: weight and bias; RMSNorm: weight only).
    fn norm(&mut self, name: &str, d: u64, bias: bool, block: Option<u32>) {
        self.push(format!("{name}.weight"), d, 0.0, block);
        if bias {
            self.push(format!("{name}.bias"), d, 0.0, block);
        }
    }
    /// Attention's score and context products, per token, on the last tensor pushed.
    fn attention_core(&mut self, d: u64) {
        let extra = 2.0 * (self.seq * d) as f64 * self.seq as f64;
        if let Some(last) = self.t.last_mut() {
            last.macs += extra;
        }
    }
    /// A layer whose only work is `macs_per_token` on the last tensor pushed (a tied head).
    fn tied_head(&mut self, macs_per_token: f64) {
        let seq = self.seq as f64;
        if let Some(last) = self.t.last_mut() {
            last.macs += macs_per_token * seq;
        }
    }
}

/// BERT-large as pre-trained (`BertForPreTraining`, Devlin et al. 2019): 24 layers, d = 1024,
/// 16 heads, FFN 4096, WordPiece vocabulary 30522, 512 positions, sequence length 512; the
/// masked-LM decoder shares the word embeddings, the pooler and next-sentence head run on the
/// first token only.
pub fn bert_large() -> Vec<Tensor> {
    let s = Shape {
        layers: 24,
        d: 1024,
        ffn: 4096,
        vocab: 30522,
        seq: 512,
    };
    let mut b = Builder {
        seq: s.seq,
        t: Vec::new(),
    };
    let d = s.d;
    let e = "bert.embeddings";
    b.push(
        format!("{e}.word_embeddings.weight"),
        s.vocab * d,
        0.0,
        None,
    );
    b.push(
        format!("{e}.position_embeddings.weight"),
        512 * d,
        0.0,
        None,
    );
    b.push(
        format!("{e}.token_type_embeddings.weight"),
        2 * d,
        0.0,
        None,
    );
    b.norm(&format!("{e}.LayerNorm"), d, true, None);
    for l in 0..s.layers {
        let p = format!("bert.encoder.layer.{l}");
        let blk = Some(l);
        b.linear(&format!("{p}.attention.self.query"), d, d, true, blk);
        b.linear(&format!("{p}.attention.self.key"), d, d, true, blk);
        b.linear(&format!("{p}.attention.self.value"), d, d, true, blk);
        b.attention_core(d);
        b.linear(&format!("{p}.attention.output.dense"), d, d, true, blk);
        b.norm(&format!("{p}.attention.output.LayerNorm"), d, true, blk);
        b.linear(&format!("{p}.intermediate.dense"), d, s.ffn, true, blk);
        b.linear(&format!("{p}.output.dense"), s.ffn, d, true, blk);
        b.norm(&format!("{p}.output.LayerNorm"), d, true, blk);
    }
    // Pooler and next-sentence head: the first token of each sequence only.
    for (name, d_out) in [("bert.pooler.dense", d), ("cls.seq_relationship", 2)] {
        b.push(format!("{name}.weight"), d * d_out, 0.0, None);
        b.t.last_mut().expect("just pushed").macs = (d * d_out) as f64;
        b.push(format!("{name}.bias"), d_out, 0.0, None);
    }
    b.linear("cls.predictions.transform.dense", d, d, true, None);
    b.norm("cls.predictions.transform.LayerNorm", d, true, None);
    // The decoder's own bias; its weight is the word embedding table.
    b.push("cls.predictions.bias".into(), s.vocab, 0.0, None);
    b.tied_head((d * s.vocab) as f64);
    b.t
}

/// GPT-2 XL (`GPT2LMHeadModel`, Radford et al. 2019): 48 layers, d = 1600, 25 heads, FFN 6400,
/// BPE vocabulary 50257, 1024 positions, sequence length 1024, LM head tied to the token
/// embeddings.
pub fn gpt2_xl() -> Vec<Tensor> {
    let s = Shape {
        layers: 48,
        d: 1600,
        ffn: 6400,
        vocab: 50257,
        seq: 1024,
    };
    let mut b = Builder {
        seq: s.seq,
        t: Vec::new(),
    };
    let d = s.d;
    b.push("transformer.wte.weight".into(), s.vocab * d, 0.0, None);
    b.push("transformer.wpe.weight".into(), 1024 * d, 0.0, None);
    for l in 0..s.layers {
        let p = format!("transformer.h.{l}");
        let blk = Some(l);
        b.norm(&format!("{p}.ln_1"), d, true, blk);
        // Fused Q, K, V projection (Conv1D 1600 -> 4800).
        b.linear(&format!("{p}.attn.c_attn"), d, 3 * d, true, blk);
        b.attention_core(d);
        b.linear(&format!("{p}.attn.c_proj"), d, d, true, blk);
        b.norm(&format!("{p}.ln_2"), d, true, blk);
        b.linear(&format!("{p}.mlp.c_fc"), d, s.ffn, true, blk);
        b.linear(&format!("{p}.mlp.c_proj"), s.ffn, d, true, blk);
    }
    b.norm("transformer.ln_f", d, true, None);
    b.tied_head((d * s.vocab) as f64);
    b.t
}

/// A Llama-style 7 B (Touvron et al. 2023, LLaMA-7B / Llama 2 7B as `LlamaForCausalLM`): 32
/// layers, d = 4096, 32 heads, SwiGLU FFN 11008 (gate, up, down), RMSNorm, rotary positions
/// (no parameters), vocabulary 32000, untied embeddings and LM head, sequence length 4096.
pub fn llama_7b() -> Vec<Tensor> {
    let s = Shape {
        layers: 32,
        d: 4096,
        ffn: 11008,
        vocab: 32000,
        seq: 4096,
    };
    let mut b = Builder {
        seq: s.seq,
        t: Vec::new(),
    };
    let d = s.d;
    b.push("model.embed_tokens.weight".into(), s.vocab * d, 0.0, None);
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        let blk = Some(l);
        b.norm(&format!("{p}.input_layernorm"), d, false, blk);
        for proj in ["q_proj", "k_proj", "v_proj"] {
            b.linear(&format!("{p}.self_attn.{proj}"), d, d, false, blk);
        }
        b.attention_core(d);
        b.linear(&format!("{p}.self_attn.o_proj"), d, d, false, blk);
        b.norm(&format!("{p}.post_attention_layernorm"), d, false, blk);
        b.linear(&format!("{p}.mlp.gate_proj"), d, s.ffn, false, blk);
        b.linear(&format!("{p}.mlp.up_proj"), d, s.ffn, false, blk);
        b.linear(&format!("{p}.mlp.down_proj"), s.ffn, d, false, blk);
    }
    b.norm("model.norm", d, false, None);
    b.linear("lm_head", d, s.vocab, false, None);
    b.t
}

/// Tokens per sequence of each model above (its multiply-adds are per sequence).
pub fn seq_len(model: &str) -> Option<u64> {
    match model {
        "bert-large" => Some(512),
        "gpt2-xl" => Some(1024),
        "llama-7b" => Some(4096),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: &[Tensor]) -> u64 {
        t.iter().map(|x| x.elems).sum()
    }

    fn within(got: u64, published: f64, tol: f64) -> bool {
        (got as f64 / published - 1.0).abs() < tol
    }

    #[test]
    fn bert_large_has_the_published_parameter_count() {
        let t = bert_large();
        // `transformers`' BertModel("bert-large-uncased") has 335,141,888 parameters; the
        // pre-training heads add the MLM transform (1,051,648), the decoder bias (30,522) and
        // the next-sentence head (2,050).
        let body: u64 = t
            .iter()
            .filter(|x| x.name.starts_with("bert."))
            .map(|x| x.elems)
            .sum();
        assert_eq!(body, 335_141_888);
        assert_eq!(params(&t), 336_226_108);
        // Published: 336 M (the `transformers` count with heads); the paper rounds to 340 M,
        // 1.1% above.
        assert!(within(params(&t), 336e6, 0.01));
        assert!(within(params(&t), 340e6, 0.012));
        // 5 embedding tensors, 16 per layer, pooler 2, heads 7.
        assert_eq!(t.len(), 5 + 24 * 16 + 2 + 2 + 5);
    }

    #[test]
    fn gpt2_xl_has_the_published_parameter_count() {
        let t = gpt2_xl();
        // `transformers`' GPT2LMHeadModel("gpt2-xl"): 1,557,611,200 (the paper's table 2 says
        // 1542 M, 1.0% less, counted before the vocabulary was fixed).
        assert_eq!(params(&t), 1_557_611_200);
        assert!(within(params(&t), 1.5576e9, 0.01));
        assert!(within(params(&t), 1.542e9, 0.011));
        assert_eq!(t.len(), 2 + 48 * 12 + 2);
    }

    #[test]
    fn llama_7b_has_the_published_parameter_count() {
        let t = llama_7b();
        // LLaMA-7B / Llama-2-7b-hf: 6,738,415,616 parameters ("6.7B" in the papers).
        assert_eq!(params(&t), 6_738_415_616);
        assert!(within(params(&t), 6.7e9, 0.01));
        assert_eq!(t.len(), 1 + 32 * 9 + 2);
    }

    #[test]
    fn multiply_adds_match_the_usual_estimate() {
        // Per token, forward: about the non-embedding parameters plus the head, plus
        // attention's 2 * layers * seq * d (Kaplan et al. 2020 count 2 N + 2 n_layer n_ctx d
        // FLOPs, i.e. N + n_layer n_ctx d multiply-adds, with half the square for causal models;
        // here the full square).
        for (name, t, layers, d) in [
            ("bert-large", bert_large(), 24.0, 1024.0),
            ("gpt2-xl", gpt2_xl(), 48.0, 1600.0),
            ("llama-7b", llama_7b(), 32.0, 4096.0),
        ] {
            let seq = seq_len(name).unwrap() as f64;
            let per_token = t.iter().map(|x| x.macs).sum::<f64>() / seq;
            let weights: f64 = t
                .iter()
                .filter(|x| x.block.is_some() && x.name.ends_with(".weight"))
                .filter(|x| !x.name.contains("norm") && !x.name.contains("ln_"))
                .map(|x| x.elems as f64)
                .sum();
            let attention = 2.0 * layers * seq * d;
            assert!(
                per_token > weights + attention && per_token < 1.2 * (weights + attention),
                "{name}: {per_token:e} vs {weights:e} + {attention:e}"
            );
        }
        // Llama-7B: ~6.5 G weight multiply-adds per token + 0.13 G head + 1.07 G attention.
        let l: f64 = llama_7b().iter().map(|x| x.macs).sum::<f64>() / 4096.0;
        assert!((l / 7.68e9 - 1.0).abs() < 0.01, "{l:e}");
    }

    #[test]
    fn blocks_are_numbered_in_order() {
        for t in [bert_large(), gpt2_xl(), llama_7b()] {
            let blocks: Vec<u32> = t.iter().filter_map(|x| x.block).collect();
            assert!(blocks.windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(blocks.first(), Some(&0));
            // Every tensor of a block is a parameter of that layer.
            for x in t.iter().filter(|x| x.block.is_some()) {
                let b = x.block.unwrap();
                assert!(
                    x.name.contains(&format!(".{b}.")),
                    "{} in block {b}",
                    x.name
                );
            }
        }
    }
}
