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
        let key = (view.wgsl.as_ptr() as usize, format);
        let mut cache = self.views.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(&key) {
            return p.clone();
        }
        let dev = &self.device;
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("view"),
            source: wgpu::ShaderSource::Wgsl(view.wgsl.into()),
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
        cache.insert(key, p.clone());
        p
    }
}

const WORD_BYTES: u64 = (shaders::program::WORDS * 4) as u64;

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
        let [r, g, b, a] = View::BACKGROUND;
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
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
            });
            pass.set_pipeline(&p.pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.draw(0..view.vertices, 0..view.instances);
        }
        gpu.queue.submit([enc.finish()]);
        true
    }

    /// The view, `side` × `side` RGBA8 pixels row by row, read back: what a canvas of that size
    /// shows now (tests compare it with the CPU reference's state). None: no view.
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
#[cfg(target_arch = "wasm32")]
pub struct Screen {
    surface: wgpu::Surface<'static>,
    format: wgpu::TextureFormat,
}

#[cfg(target_arch = "wasm32")]
impl Screen {
    /// A screen on `canvas` (transferred from the page), for `gpu`'s device.
    pub fn new(gpu: &Gpu, canvas: wgpu::web_sys::OffscreenCanvas) -> Result<Self, GpuError> {
        let (width, height) = (canvas.width().max(1), canvas.height().max(1));
        let surface = gpu
            .instance
            .create_surface(wgpu::SurfaceTarget::OffscreenCanvas(canvas))
            .map_err(|e| GpuError::Device(e.to_string()))?;
        let config = surface
            .get_default_config(&gpu.adapter, width, height)
            .ok_or_else(|| {
                GpuError::Device("the canvas cannot show this adapter's output".into())
            })?;
        surface.configure(&gpu.device, &config);
        Ok(Self {
            surface,
            format: config.format,
        })
    }

    /// Shows `run`'s state now; false if there was nothing to show or no frame to draw into.
    pub fn show(&self, run: &Run<'_>) -> bool {
        let frame = match self.surface.get_current_texture() {
            wgpu::CurrentSurfaceTexture::Success(f)
            | wgpu::CurrentSurfaceTexture::Suboptimal(f) => f,
            _ => return false,
        };
        let drawn = run.draw(&frame.texture.create_view(&Default::default()), self.format);
        run.gpu.queue.present(frame);
        drawn
    }
}
