//! ResNet-50's gradients as a training framework hands them to the all-reduce: one tensor per
//! parameter, in the order `model.parameters()` lists them, each with the forward
//! multiply-adds of the layer that owns it (which set when its gradient is ready in the
//! backward pass).
//!
//! Built from the architecture (He et al. 2016, "Deep Residual Learning", table 1, 50-layer
//! column; torchvision's v1.5 layout, stride on the 3x3 convolution) at 224 x 224 input, rather
//! than listed by hand: the tests check the totals every framework reports, 25,557,032
//! parameters in 161 tensors and ~4.1 G multiply-adds per image.

/// One parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub elems: u64,
    /// Forward multiply-adds per image of the layer this tensor belongs to, counted once, on
    /// the layer's weight (0 for batch-norm and bias tensors).
    pub macs: f64,
    /// The repeated block (residual or transformer block) the tensor belongs to, numbered in
    /// forward order; `None` for the stem, the embeddings and the heads. FSDP shards one unit
    /// per block plus one for the rest.
    pub block: Option<u32>,
}

/// ResNet-50's parameter tensors in forward order.
pub fn resnet50() -> Vec<Tensor> {
    let mut t = Vec::new();
    // The block of the tensors being pushed.
    let mut block = None;
    let conv = |t: &mut Vec<Tensor>,
                block: Option<u32>,
                name: &str,
                cin: u64,
                cout: u64,
                k: u64,
                out_hw: u64| {
        let elems = cin * cout * k * k;
        t.push(Tensor {
            name: format!("{name}.weight"),
            elems,
            macs: (elems * out_hw * out_hw) as f64,
            block,
        });
    };
    let bn = |t: &mut Vec<Tensor>, block: Option<u32>, name: &str, c: u64| {
        for p in ["weight", "bias"] {
            t.push(Tensor {
                name: format!("{name}.{p}"),
                elems: c,
                macs: 0.0,
                block,
            });
        }
    };
    // Stem: 7x7/2 convolution to 112 x 112, then a 3x3/2 max-pool to 56 x 56.
    conv(&mut t, block, "conv1", 3, 64, 7, 112);
    bn(&mut t, block, "bn1", 64);
    let mut cin = 64;
    let mut hw = 56;
    for (stage, (blocks, width)) in [(3u64, 64u64), (4, 128), (6, 256), (3, 512)]
        .into_iter()
        .enumerate()
    {
        for b in 0..blocks {
            let name = format!("layer{}.{b}", stage + 1);
            block = Some(block.map_or(0, |n: u32| n + 1));
            // The first block of stages 2-4 halves the resolution in its 3x3 convolution.
            let stride = if b == 0 && stage > 0 { 2 } else { 1 };
            let out_hw = hw / stride;
            conv(&mut t, block, &format!("{name}.conv1"), cin, width, 1, hw);
            bn(&mut t, block, &format!("{name}.bn1"), width);
            conv(
                &mut t,
                block,
                &format!("{name}.conv2"),
                width,
                width,
                3,
                out_hw,
            );
            bn(&mut t, block, &format!("{name}.bn2"), width);
            conv(
                &mut t,
                block,
                &format!("{name}.conv3"),
                width,
                4 * width,
                1,
                out_hw,
            );
            bn(&mut t, block, &format!("{name}.bn3"), 4 * width);
            if b == 0 {
                conv(
                    &mut t,
                    block,
                    &format!("{name}.downsample.0"),
                    cin,
                    4 * width,
                    1,
                    out_hw,
                );
                bn(&mut t, block, &format!("{name}.downsample.1"), 4 * width);
            }
            cin = 4 * width;
            hw = out_hw;
        }
    }
    t.push(Tensor {
        name: "fc.weight".into(),
        elems: 2048 * 1000,
        macs: 2048.0 * 1000.0,
        block: None,
    });
    t.push(Tensor {
        name: "fc.bias".into(),
        elems: 1000,
        macs: 0.0,
        block: None,
    });
    t
}

/// A group of gradients all-reduced as one buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    pub bytes: u64,
    /// Fraction of the backward pass done when its last gradient is ready (0..=1).
    pub ready: f64,
    pub tensors: usize,
}

/// Groups `tensors` (forward order, `elem` bytes each) into buckets the way PyTorch's
/// DistributedDataParallel does: in reverse order (the order the backward pass produces them),
/// a bucket closing once it holds at least its cap, the first bucket capped at `first_cap`
/// bytes (DDP: 1 MiB) and the others at `cap` (DDP: `bucket_cap_mb`, 25 MiB). A cap of 0 puts
/// every tensor in its own bucket. The backward pass takes each layer's time in proportion to
/// its multiply-adds.
pub fn buckets(tensors: &[Tensor], elem: u64, first_cap: u64, cap: u64) -> Vec<Bucket> {
    let total: f64 = tensors.iter().map(|t| t.macs).sum();
    let mut out = Vec::new();
    let mut done_macs = 0.0;
    let mut current = Bucket {
        bytes: 0,
        ready: 0.0,
        tensors: 0,
    };
    for t in tensors.iter().rev() {
        // A layer's weight gradient is ready once its own backward has run.
        done_macs += t.macs;
        current.bytes += t.elems * elem;
        current.tensors += 1;
        current.ready = if total > 0.0 { done_macs / total } else { 1.0 };
        let limit = if out.is_empty() { first_cap } else { cap };
        if current.bytes >= limit {
            out.push(std::mem::replace(
                &mut current,
                Bucket {
                    bytes: 0,
                    ready: 0.0,
                    tensors: 0,
                },
            ));
        }
    }
    if current.tensors > 0 {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet50_has_the_published_totals() {
        let t = resnet50();
        // torchvision.models.resnet50(): sum(p.numel()) == 25,557,032 over 161 tensors.
        assert_eq!(t.iter().map(|x| x.elems).sum::<u64>(), 25_557_032);
        assert_eq!(t.len(), 161);
        // ~4.1 G multiply-adds per 224 x 224 image (He et al. table 1: 3.8 x 10^9 FLOPs for the
        // v1 layout; v1.5 moves the stride to the 3x3 convolution and counts ~4.09 G).
        let macs: f64 = t.iter().map(|x| x.macs).sum();
        assert!((macs / 4.09e9 - 1.0).abs() < 0.02, "{macs}");
        assert_eq!(t[0].name, "conv1.weight");
        assert_eq!(t[160].name, "fc.bias");
    }

    #[test]
    fn buckets_follow_ddp_rules() {
        let t = resnet50();
        let b = buckets(&t, 4, 1 << 20, 25 << 20);
        // Every gradient in exactly one bucket, the first one small, none far over the cap.
        assert_eq!(b.iter().map(|x| x.tensors).sum::<usize>(), 161);
        assert_eq!(b.iter().map(|x| x.bytes).sum::<u64>(), 25_557_032 * 4);
        assert!(b[0].bytes >= 1 << 20 && b[0].bytes < 9 << 20);
        assert!(b.iter().all(|x| x.bytes < (25 << 20) + (10 << 20)));
        // The fc layer comes first: its gradient is ready almost at once.
        assert!(b[0].ready < 0.01);
        assert!(b.windows(2).all(|w| w[0].ready <= w[1].ready));
        assert_eq!(b.last().unwrap().ready, 1.0);
        // Cap 0: one bucket per tensor; a huge cap: one bucket.
        assert_eq!(buckets(&t, 4, 0, 0).len(), 161);
        assert_eq!(buckets(&t, 4, u64::MAX, u64::MAX).len(), 1);
    }
}
