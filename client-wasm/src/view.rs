//! The live view: a unit's state drawn by the device that computes it, from the same storage
//! buffers, with nothing read back. Each kernel says how it is drawn
//! ([`shaders::program::View`], beside its WGSL); [`Run::draw`] draws it into any texture:
//! the volunteer page's canvas ([`Screen`], an `OffscreenCanvas` handed to the worker) or, in
//! tests, a texture read back by [`Run::snapshot`].

use crate::gpu::{Gpu, GpuError, Run};
use shaders::program::View;
use std::num::NonZeroU64;
use std::sync::Arc;
use wgpu::util::DeviceExt;

/// A view's shaders, compiled for one target format.
pub(crate) struct ViewPipeline {
    bgl: wgpu::BindGroupLayout,
    pipeline: wgpu::RenderPipeline,
}

impl Gpu {
    fn view_pipeline(&self, view: &View, format: wgpu::TextureFormat) -> Arc<ViewPipeline> {
        let mut cache = self.views.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = cache
            .iter()
            .find(|(k, _)| (Arc::ptr_eq(&k.0, &view.wgsl) || k.0 == view.wgsl) && k.1 == format)
        {
            return p.clone();
        }
        let dev = &self.device;
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("view"),
            source: wgpu::ShaderSource::Wgsl(view.wgsl.as_ref().into()),
        });
        let stages = wgpu::ShaderStages::VERTEX | wgpu::ShaderStages::FRAGMENT;
        let bgl = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("view"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: stages,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: NonZeroU64::new(WORD_BYTES),
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: stages,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: true },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
            ],
        });
        let layout = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("view"),
            bind_group_layouts: &[Some(&bgl)],
            immediate_size: 0,
        });
        let pipeline = dev.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("view"),
            layout: Some(&layout),
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("view_vs"),
                compilation_options: Default::default(),
                buffers: &[],
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("view_fs"),
                compilation_options: Default::default(),
                targets: &[Some(format.into())],
            }),
            multiview_mask: None,
            cache: None,
        });
        let p = Arc::new(ViewPipeline { bgl, pipeline });
        cache.push(((view.wgsl.clone(), format), p.clone()));
        p
    }
}

const WORD_BYTES: u64 = (shaders::program::WORDS * 4) as u64;

/// A render pass into `target` that starts by filling it with [`View::BACKGROUND`].
fn background_pass<'e>(
    enc: &'e mut wgpu::CommandEncoder,
    target: &wgpu::TextureView,
) -> wgpu::RenderPass<'e> {
    let [r, g, b, a] = View::BACKGROUND;
    enc.begin_render_pass(&wgpu::RenderPassDescriptor {
        label: Some("view"),
        color_attachments: &[Some(wgpu::RenderPassColorAttachment {
            view: target,
            depth_slice: None,
            resolve_target: None,
            ops: wgpu::Operations {
                load: wgpu::LoadOp::Clear(wgpu::Color { r, g, b, a }),
                store: wgpu::StoreOp::Store,
            },
        })],
        ..Default::default()
    })
}

impl Run<'_> {
    /// Draws the state as it is after the segments run so far into `target` (a square of
    /// `format`), queued behind them on the device. False when the plan has no view.
    pub fn draw(&self, target: &wgpu::TextureView, format: wgpu::TextureFormat) -> bool {
        let Some(view) = self.plan.view() else {
            return false;
        };
        let Some(state) = self.buffers.get(view.buffer) else {
            return false;
        };
        let gpu = self.gpu;
        let p = gpu.view_pipeline(&view, format);
        let words: Vec<u8> = view.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let words = gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("view words"),
                contents: &words,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("view"),
            layout: &p.bgl,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: words.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: state.as_entire_binding(),
                },
            ],
        });
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = background_pass(&mut enc, target);
            pass.set_pipeline(&p.pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.draw(0..view.vertices, 0..view.instances);
        }
        gpu.queue.submit([enc.finish()]);
        true
    }

    /// The view, `side` × `side` RGBA8 pixels row by row, read back: what a canvas of that size
    /// shows now (tests compare it with the CPU reference's state). None: no view.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn snapshot(&self, side: u32) -> Result<Option<Vec<u8>>, GpuError> {
        let gpu = self.gpu;
        let format = wgpu::TextureFormat::Rgba8Unorm;
        let size = wgpu::Extent3d {
            width: side,
            height: side,
            depth_or_array_layers: 1,
        };
        let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("view snapshot"),
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        if !self.draw(&texture.create_view(&Default::default()), format) {
            return Ok(None);
        }
        let row = (4 * side).next_multiple_of(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT);
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("view readback"),
            size: u64::from(row * side),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_texture_to_buffer(
            texture.as_image_copy(),
            wgpu::TexelCopyBufferInfo {
                buffer: &staging,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(row),
                    rows_per_image: None,
                },
            },
            size,
        );
        gpu.queue.submit([enc.finish()]);
        let padded = gpu.read(&staging, u64::from(row * side)).await?;
        Ok(Some(
            padded
                .chunks(row as usize)
                .flat_map(|r| &r[..4 * side as usize])
                .copied()
                .collect(),
        ))
    }
}

/// The volunteer page's canvas, in the worker: frames of the running unit are drawn into it.
/// The canvas's WebGPU context is configured with this device and each frame's texture wrapped
/// for wgpu (wgpu's own surfaces would add a tenth to the download for the same thing).
#[cfg(target_arch = "wasm32")]
pub struct Screen {
    context: wasm_bindgen::JsValue,
    size: wgpu::Extent3d,
}

#[cfg(target_arch = "wasm32")]
const SCREEN_FORMAT: wgpu::TextureFormat = wgpu::TextureFormat::Rgba8Unorm;

#[cfg(target_arch = "wasm32")]
fn js_call(
    target: &wasm_bindgen::JsValue,
    method: &str,
    args: &[wasm_bindgen::JsValue],
) -> Result<wasm_bindgen::JsValue, GpuError> {
    use wasm_bindgen::JsCast;
    let f: js_sys::Function = js_sys::Reflect::get(target, &method.into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| GpuError::Device(format!("the canvas has no {method}")))?;
    f.apply(target, &args.iter().collect::<js_sys::Array>())
        .map_err(|e| GpuError::Device(format!("{method}: {e:?}")))
}

#[cfg(target_arch = "wasm32")]
impl Screen {
    /// A screen on `canvas` (an `OffscreenCanvas` the page transferred), for `gpu`'s device.
    pub fn new(gpu: &Gpu, canvas: &wasm_bindgen::JsValue) -> Result<Self, GpuError> {
        let device = gpu
            .device
            .as_webgpu()
            .ok_or_else(|| GpuError::Device("not a WebGPU device".into()))?;
        let number = |k: &str| {
            js_sys::Reflect::get(canvas, &k.into())
                .ok()
                .and_then(|v| v.as_f64())
                .map_or(1, |v| (v as u32).max(1))
        };
        let size = wgpu::Extent3d {
            width: number("width"),
            height: number("height"),
            depth_or_array_layers: 1,
        };
        let context = js_call(canvas, "getContext", &["webgpu".into()])?;
        if context.is_null() || context.is_undefined() {
            return Err(GpuError::Device(
                "the canvas gives no WebGPU context".into(),
            ));
        }
        let config = js_sys::Object::new();
        let set = |k: &str, v: &wasm_bindgen::JsValue| js_sys::Reflect::set(&config, &k.into(), v);
        let _ = set("device", device.as_ref());
        let _ = set("format", &"rgba8unorm".into());
        let _ = set("alphaMode", &"opaque".into());
        js_call(&context, "configure", &[config.into()])?;
        Ok(Self { context, size })
    }

    /// The canvas's texture for this frame, as wgpu's.
    fn frame(&self, gpu: &Gpu) -> Result<wgpu::TextureView, String> {
        use wasm_bindgen::JsCast;
        let frame = js_call(&self.context, "getCurrentTexture", &[]).map_err(|e| e.to_string())?;
        let texture = gpu.device.create_texture_from_webgpu_handle(
            frame.unchecked_into(),
            &wgpu::TextureDescriptor {
                label: None,
                size: self.size,
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: SCREEN_FORMAT,
                usage: wgpu::TextureUsages::RENDER_ATTACHMENT,
                view_formats: &[],
            },
            None,
        );
        Ok(texture.create_view(&Default::default()))
    }

    /// Shows an empty frame. Some browsers lose the device when a WebGPU canvas is shown
    /// (headless Chromium without a GPU compositor, for one): the caller checks
    /// [`Gpu::is_lost`] a moment later, so the computation does not go with the view.
    pub async fn clear(&self, gpu: &Gpu) -> Result<(), String> {
        validated(gpu, || {
            let view = self.frame(gpu)?;
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            background_pass(&mut enc, &view);
            gpu.queue.submit([enc.finish()]);
            Ok(())
        })
        .await
    }

    /// Shows `run`'s state now: Ok(false) if there was nothing to show; Err if the device
    /// refused the frame (the view should stop; the computation is unharmed).
    pub async fn show(&self, run: &Run<'_>) -> Result<bool, String> {
        validated(run.gpu, || {
            Ok(run.draw(&self.frame(run.gpu)?, SCREEN_FORMAT))
        })
        .await
    }
}

/// The live view as the worker runs it: a [`Screen`] drawn at most every so often, until the
/// device refuses a frame. The volunteer loop's host and `bench browser` both draw through it.
#[cfg(target_arch = "wasm32")]
pub struct LiveView {
    screen: Screen,
    /// Least time between frames (ms): a few a second on a GPU; on a software adapter
    /// (SwiftShader) every frame is drawn by the CPU cores that compute, so one in two seconds
    /// (`bench browser` measured 6–17% of the compute rate at four a second there).
    every_ms: f64,
    drawn_at: std::cell::Cell<f64>,
    /// The device refused a frame: no more are drawn.
    failed: std::cell::Cell<bool>,
}

#[cfg(target_arch = "wasm32")]
impl LiveView {
    pub fn new(screen: Screen, gpu: &Gpu) -> Self {
        Self {
            screen,
            every_ms: if gpu.adapter().device_type == "Cpu" {
                2000.0
            } else {
                250.0
            },
            drawn_at: std::cell::Cell::new(f64::NEG_INFINITY),
            failed: std::cell::Cell::new(false),
        }
    }

    /// Draws `run`'s state if a frame is due (`force`: draw now). Ok(true) when one was; Err
    /// when the device refused it, after which nothing more is drawn.
    pub async fn frame(&self, run: &Run<'_>, force: bool) -> Result<bool, String> {
        let now = js_sys::Date::now();
        if self.failed.get() || (!force && now - self.drawn_at.get() < self.every_ms) {
            return Ok(false);
        }
        self.drawn_at.set(now);
        let shown = self.screen.show(run).await;
        self.failed.set(shown.is_err());
        shown
    }
}

/// `f`'s result, or the validation error the device reports for what `f` submitted.
#[cfg(target_arch = "wasm32")]
async fn validated<T>(gpu: &Gpu, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let out = f()?;
    match scope.pop().await {
        Some(e) => Err(e.to_string()),
        None => Ok(out),
    }
}
