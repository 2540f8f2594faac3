//! Pipeline-level tests; equality with Hugging Face lives in tests/test_preprocess*.py.

use super::*;

const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

fn clip336() -> Pipeline {
    Pipeline::new(PipelineSpec {
        backend: Backend::Pillow,
        resize: Some((SizeRule::ShortestEdge(336), Filter::Bicubic)),
        rescale: Some(1.0 / 255.0),
        normalize: Some((CLIP_MEAN, CLIP_STD)),
        layout: Layout::ChannelsFirst {
            crop: Some((336, 336)),
        },
    })
    .unwrap()
}

fn qwen2vl() -> Pipeline {
    Pipeline::new(PipelineSpec {
        backend: Backend::Pillow,
        resize: Some((
            SizeRule::SmartResize {
                min_pixels: 56 * 56,
                max_pixels: 28 * 28 * 1280,
            },
            Filter::Bicubic,
        )),
        rescale: Some(1.0 / 255.0),
        normalize: Some((CLIP_MEAN, CLIP_STD)),
        layout: Layout::Qwen2VlPatches(PatchGeometry {
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
        }),
    })
    .unwrap()
}

#[test]
fn clip_constant_batch_normalizes_each_channel() {
    let p = clip336();
    let (n, h, w) = (3, 300, 300);
    let input: Vec<u8> = (0..n)
        .flat_map(|i| std::iter::repeat_n([10 * i as u8, 128, 255], h * w).flatten())
        .collect();
    let plan = p.plan(n, h, w).unwrap();
    assert_eq!(plan.shape, vec![3, 3, 336, 336]);
    let mut out = vec![f32::NAN; plan.len()];
    p.run(&input, n, h, w, &mut out).unwrap();
    let plane = 336 * 336;
    for i in 0..n {
        let img = &out[i * 3 * plane..(i + 1) * 3 * plane];
        for (c, v) in [10.0 * i as f64, 128.0, 255.0].into_iter().enumerate() {
            let want = ((v / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c]) as f32;
            assert!(img[c * plane..(c + 1) * plane]
                .iter()
                .all(|x| (x - want).abs() < 1e-5));
        }
    }
}

#[test]
fn clip_odd_sizes_plan_and_run() {
    let p = clip336();
    for (h, w) in [(1, 1), (7, 300), (301, 299)] {
        let plan = p.plan(2, h, w).unwrap();
        assert_eq!(plan.shape, vec![2, 3, 336, 336]);
        let input: Vec<u8> = (0..2 * h * w * 3).map(|i| (i * 31 % 251) as u8).collect();
        let mut out = vec![f32::NAN; plan.len()];
        p.run(&input, 2, h, w, &mut out).unwrap();
        assert!(out.iter().all(|x| x.is_finite()));
    }
}

#[test]
fn qwen_plan_gives_grid() {
    let p = qwen2vl();
    let plan = p.plan(4, 300, 300).unwrap();
    assert_eq!(plan.resized, (308, 308));
    assert_eq!(plan.grid, Some((22, 22)));
    assert_eq!(plan.shape, vec![4 * 22 * 22, 3 * 2 * 14 * 14]);
    let input = vec![200u8; 4 * 300 * 300 * 3];
    let mut out = vec![f32::NAN; plan.len()];
    p.run(&input, 4, 300, 300, &mut out).unwrap();
    let want = ((200.0 / 255.0 - CLIP_MEAN[0]) / CLIP_STD[0]) as f32;
    assert!((out[0] - want).abs() < 1e-5);
    assert!(out.iter().all(|x| x.is_finite()));
}

#[test]
fn bad_inputs_are_named() {
    let p = clip336();
    assert!(matches!(
        p.plan(0, 300, 300),
        Err(PreprocessError::EmptyBatch(_))
    ));
    assert!(matches!(
        p.plan(1, 0, 300),
        Err(PreprocessError::BadShape(_))
    ));
    let mut out = vec![0f32; 3 * 336 * 336];
    let err = p.run(&[0u8; 10], 1, 300, 300, &mut out).unwrap_err();
    assert!(
        err.to_string().contains("expected 1 x 300 x 300 x 3"),
        "{err}"
    );
    let err = p
        .run(&vec![0u8; 300 * 300 * 3], 1, 300, 300, &mut out[1..])
        .unwrap_err();
    assert!(matches!(err, PreprocessError::OutputSize { .. }));
    assert!(matches!(
        qwen2vl().plan(1, 1, 300),
        Err(PreprocessError::AspectRatio { .. })
    ));
}

#[test]
fn invalid_specs_are_rejected() {
    let spec = PipelineSpec {
        backend: Backend::Torchvision,
        resize: Some((
            SizeRule::SmartResize {
                min_pixels: 10,
                max_pixels: 100,
            },
            Filter::Bicubic,
        )),
        rescale: None,
        normalize: None,
        layout: Layout::ChannelsFirst { crop: None },
    };
    assert!(matches!(
        Pipeline::new(spec.clone()),
        Err(PreprocessError::InvalidSpec(_))
    ));
    let spec = PipelineSpec {
        normalize: Some(([0.0; 3], [1.0, 0.0, 1.0])),
        resize: None,
        ..spec
    };
    assert!(matches!(
        Pipeline::new(spec),
        Err(PreprocessError::InvalidSpec(_))
    ));
}

#[test]
fn crop_rounding_differs_only_when_padding() {
    let mk = |backend| {
        Pipeline::new(PipelineSpec {
            backend,
            resize: None,
            rescale: None,
            normalize: None,
            layout: Layout::ChannelsFirst { crop: Some((8, 3)) },
        })
        .unwrap()
    };
    // Height 5 padded to 8: Pillow puts 2 zero rows on top, torchvision 1.
    assert_eq!(
        mk(Backend::Pillow).window((5, 7)),
        Some(Window {
            top: -2,
            left: 2,
            height: 8,
            width: 3
        })
    );
    assert_eq!(
        mk(Backend::Torchvision).window((5, 7)),
        Some(Window {
            top: -1,
            left: 2,
            height: 8,
            width: 3
        })
    );
}

/// Worker scratch (weights, plans, buffers) kept between batches: batches of
/// other sizes in between leave the results of a fresh pipeline unchanged.
#[test]
fn reused_scratch_gives_fresh_results() {
    let run = |p: &Pipeline, (n, h, w): (usize, usize, usize), seed: usize| {
        let input: Vec<u8> = (0..n * h * w * 3)
            .map(|i| ((i * 7919 + seed) % 256) as u8)
            .collect();
        let mut out = vec![0f32; p.plan(n, h, w).unwrap().len()];
        p.run(&input, n, h, w, &mut out).unwrap();
        out
    };
    for make in [clip336, qwen2vl] {
        let reused = make();
        let sizes = [(5, 300, 300), (2, 7, 300), (3, 301, 299), (5, 300, 300)];
        for (k, &size) in sizes.iter().enumerate() {
            assert_eq!(run(&reused, size, k), run(&make(), size, k), "{size:?}");
        }
    }
}
