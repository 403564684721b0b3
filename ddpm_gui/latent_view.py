"""The main view in latent space, and pipeline runs taking over the image area.

:class:`LatentView` is the "Latent space" toggle (``latentSpaceCheck``) of the main window: with a Stable Diffusion
pipeline chosen in the Generate tab, the photo is encoded once on a worker (:func:`core.latent.view.encode_job`),
and the timestep slider noises its latents z_t = √ᾱ_t·z_0 + √(1−ᾱ_t)·ε with the pipeline's schedule (shown by the
schedule panel meanwhile). The x_t pane shows z_t decoded by the linear map while the slider moves and by the full
VAE once it rests (debounced, on a worker); beside it the latent channels; the histogram shows the latents against
N(0, 1); the readout the latent PSNR; the strip decodes z_t at its timesteps with the VAE (on a worker). The UI
thread only runs the linear map (a 3×C matrix and an upsampling), never a network.

:class:`Takeover` lets the frames the Generate panel paints (``framePainted(u8)``) take over the image area while
a pipeline generates (View ▸ "Generated frames take over the image area", remembered), zoomable like the photo.
"""
from __future__ import annotations

import html

import numpy as np
from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QCheckBox, QPushButton
from superqt.utils import qdebounced

from core.images import to_uint8
from core.jobs.threads import one_torch_thread
from core.latent.view import (LATENT_PEAK, LatentPhoto, channel_tiles, decode_u8, encode_job, export_strip_job,
                              strip_frames_job, vae_frame_job)
from core.readout import readout_cells, readout_values
from ddpm_gui.image_views import ImagePane
from ddpm_gui.widgets import named
from ddpm_gui.window_ui import xt_title

REST_MS = 250          # the full VAE decodes z_t this long after the slider stops
APPROX, VAE = "approx", "vae"
ON_TIP = ("Latent space: noise the photo's Stable Diffusion latents z_0 = s·E(x_0) instead of its pixels, with "
          "the pipeline's schedule: z_t = √ᾱ_t·z_0 + √(1−ᾱ_t)·ε (eq. 5). The view shows z_t decoded — by a linear "
          "latent→RGB map while t moves, by the full VAE when it rests — with the latent channels beside it.")
OFF_TIP = "Latent space needs a Stable Diffusion pipeline: choose one in the Generate tab's model menu first."
TAKEOVER_KEY = "view/generationTakeover"
XT_LATENT_TITLE = ("<b>D(z<sub>t</sub>/s)</b>, z<sub>t</sub> = √ᾱ<sub>t</sub>·z<sub>0</sub> + "
                   "√(1−ᾱ<sub>t</sub>)·ε (eq. 5) — {decoder}")


def build_latent_widgets(w) -> None:
    """The toggle, the latent-channels pane and the takeover pane (called by :func:`ddpm_gui.window_ui.build_view`)."""
    w.latentSpaceCheck = named(QCheckBox("Latent space"), "latentSpaceCheck", OFF_TIP)
    w.latentSpaceCheck.setEnabled(False)
    w.channelsPane = ImagePane("<b>z<sub>t</sub></b> — latent channels", "latentChannelsPane",
                               "The latent channels of z_t (one latent per pixel), grey over ±3: SD's scaled latents "
                               "have σ ≈ 1. Wheel: zoom, drag: pan.")
    w.channelsPane.view.setMinimumSize(120, 120)
    w.channelsPane.setMaximumWidth(280)
    w.channelsPane.hide()
    w.takeoverPane = ImagePane("<b>Generating</b>", "takeoverPane",
                               "The pipeline's live frames (decoded x_t beside x̂_0), as the Generate panel paints "
                               "them. Wheel: zoom, drag: pan, Ctrl+0: fit.")
    w.takeoverBackButton = named(QPushButton("Back to the photo"), "takeoverBackButton",
                                 "Show the photo and the slider's x_t again (the run's frames stay in the Generate tab)")
    w.takeoverPane.layout().insertWidget(0, w.takeoverBackButton)
    w.takeoverPane.hide()


class LatentView(QObject):
    """The window's latent-space state (see the module docstring). ``window.latent``."""

    frameShown = Signal(int, str)     # z_t at this t was shown, decoded by "approx" or "vae"
    encoded = Signal()                # the photo's latents are ready
    stripShown = Signal()             # the latent strip (VAE-decoded) is shown
    stripExported = Signal(str)       # the latent strip was written to this path

    def __init__(self, window):
        super().__init__(window)
        self.w = window
        self.pipe = None
        self.photo: LatentPhoto | None = None
        self.approx = None
        self._photo_gen = -1           # the window's photo generation the latents belong to
        self._encoding_gen = None
        self.frames_vae = 0
        self._encode_runner = window.create_runner("latent-encode")
        self._vae_runner = window.create_runner("latent-decode")
        self._strip_runner = window.create_runner("latent-strip")
        self._export_runner = window.create_runner("latent-export")
        self._request_vae = qdebounced(self._start_vae, timeout=REST_MS, parent=self)
        window.latentSpaceCheck.toggled.connect(self.set_active)

    @property
    def active(self) -> bool:
        return self.w.latentSpaceCheck.isChecked() and self.pipe is not None

    @property
    def ready(self) -> bool:
        return self.active and self.photo is not None and self._photo_gen == self.w._photo_gen

    # ----- the pipeline and the toggle ---------------------------------------------------------------------
    def set_pipeline(self, pipe) -> None:
        """The Generate panel's pipeline (None: a pixel model): enables the toggle; a new one re-encodes."""
        if pipe is self.pipe:
            return
        was_on = self.active
        self._forget()
        self.pipe = pipe
        check = self.w.latentSpaceCheck
        check.setEnabled(pipe is not None)
        check.setToolTip(ON_TIP + f" Pipeline: {pipe.name}." if pipe is not None else OFF_TIP)
        if pipe is None:
            check.setChecked(False)   # turns the view back to pixels (toggled → set_active(False))
        elif was_on:
            self._enter()

    def set_active(self, on: bool) -> None:
        if on and self.pipe is None:
            self.w.latentSpaceCheck.setChecked(False)
            return
        self._enter() if on else self._leave()

    def _enter(self) -> None:
        w = self.w
        if w.mode != "closed":
            w.set_mode("closed")
        w.modeCombo.setEnabled(False)
        w.modeCombo.setToolTip(w.modeCombo.toolTip().split("\n\n")[0] + "\n\nLatent space shows the closed form.")
        w.histogram.set_subject(latent=True)
        w.channelsPane.show()
        w.x0Pane.title.setText("<b>x<sub>0</sub></b> as the VAE sees it")
        w.noisePane.title.setText("<b>ε</b> ~ N(0, I) on the latents, shown through the linear map")
        s = self.pipe.denoiser.schedule
        w.schedule_panel.show_override(s, f"<b>{self.pipe.name}</b>'s schedule (latent space; read-only)")
        self._title(APPROX if self.photo is None else w.xtPane.title.property("decoder") or APPROX)
        w._request_frame()
        w._request_strip()

    def _leave(self) -> None:
        w = self.w
        for r in (self._encode_runner, self._vae_runner, self._strip_runner):
            r.discard()
        self._request_vae.cancel()
        self._encoding_gen = None
        w.modeCombo.setEnabled(True)
        w.modeCombo.setToolTip(w.modeCombo.toolTip().split("\n\n")[0])
        w.histogram.set_subject(latent=False)
        w.channelsPane.hide()
        w.schedule_panel.end_override()
        w.xtPane.title.setText(xt_title(w.mode))
        w.x0Pane.title.setText(f"<b>x<sub>0</sub></b> — {html.escape(w._photo_label)}")
        w.noisePane.title.setText("<b>ε</b> ~ N(0, I) — fixed for this photo and seed")
        if w.x0 is not None:
            w.x0Pane.set_image(to_uint8(w.x0))
            if w.noise is not None:
                w.noisePane.set_image(to_uint8(w.noise))
        w._request_frame()
        w._request_strip()
        w._request_aux()

    def _forget(self) -> None:
        for r in (self._encode_runner, self._vae_runner, self._strip_runner):
            r.discard()
        self._request_vae.cancel()
        self.photo, self.approx, self._photo_gen, self._encoding_gen = None, None, -1, None

    def _title(self, decoder: str) -> None:
        label = {APPROX: "linear latent→RGB map (t moving)", VAE: "full VAE (t at rest)"}[decoder]
        self.w.xtPane.title.setText(XT_LATENT_TITLE.format(decoder=label))
        self.w.xtPane.title.setProperty("decoder", decoder)

    # ----- encoding ----------------------------------------------------------------------------------------
    def _encode(self) -> None:
        w = self.w
        gen = w._photo_gen
        if self._encoding_gen == gen or w.x0 is None:
            return
        self._encoding_gen = gen
        pipe = self.pipe
        w.statusBar().showMessage(f"Encoding the photo with {pipe.name}'s VAE…", 8000)
        self.w.xtPane.title.setText("<b>z<sub>0</sub></b> = s·E(x<sub>0</sub>): encoding the photo…")
        self._encode_runner.start(encode_job, pipe, w.x0, w.seed,
                                  on_finished=lambda r, g=gen, p=pipe: self._on_encoded(r, g, p),
                                  on_error=self._on_encode_failed)

    def _on_encoded(self, result, gen: int, pipe) -> None:
        self._encoding_gen = None
        if pipe is not self.pipe or not self.active:
            return
        self.photo, self.approx = result
        self._photo_gen = gen
        if gen != self.w._photo_gen:      # a newer photo came meanwhile
            self.w._request_frame()
            return
        c, h, wd = self.photo.z0.shape
        H, W = self.photo.x0.shape[:2]
        self.w.statusBar().showMessage(f"Encoded {W}×{H} pixels to {c}×{h}×{wd} latents with {pipe.name}'s VAE",
                                       8000)
        self.w.x0Pane.set_image(to_uint8(self.photo.x0))
        self._show_noise()
        self.encoded.emit()
        self.w._request_frame()
        self.w._request_strip()

    def _on_encode_failed(self, exc) -> None:
        from core.messages import one_line
        self._encoding_gen = None
        self.w.show_error(f"Latent space: {one_line(exc)}", title="Latent space")
        self.w.latentSpaceCheck.setChecked(False)

    def _current_photo(self) -> LatentPhoto | None:
        """The latents of the window's photo with its seed's ε (re-drawn at once, no model, after a new seed)."""
        if self.photo is None or self._photo_gen != self.w._photo_gen:
            self._encode()
            return None
        if self.photo.seed != self.w.seed:
            self.photo = self.photo.with_seed(self.w.seed)
            self._show_noise()
        return self.photo

    def _show_noise(self) -> None:
        with one_torch_thread():
            self.w.noisePane.set_image(decode_u8(self.approx, self.photo.noise))

    # ----- the slider --------------------------------------------------------------------------------------
    def render(self, t: int) -> None:
        """The slider's frame at t: z_t through the linear map now, the full VAE once t rests."""
        photo = self._current_photo()
        if photo is None:
            return
        s = self.w.schedule
        z = photo.at(t, s)
        with one_torch_thread():
            u8 = decode_u8(self.approx, z)
        self._update_readout(t)
        self.w.channelsPane.set_image(channel_tiles(z))
        self._title(APPROX)
        self.w._show_frame(u8, 1, t, full_shape=u8.shape[:2])
        self.w._request_aux()
        self.frameShown.emit(t, APPROX)
        self._request_vae()

    def _update_readout(self, t: int) -> None:
        w = self.w
        w.readout_values = readout_values(w.schedule, t, self.photo.psnr(t, w.schedule))
        w.readout.setText("&nbsp;&nbsp;·&nbsp;&nbsp;".join(
            f"{k} = <b>{v}</b>" for k, v in readout_cells(w.readout_values, latent_peak=LATENT_PEAK)))

    def histogram_values(self, t: int) -> np.ndarray | None:
        photo = self.photo if self.ready else None
        return None if photo is None else photo.hist_values(t, self.w.schedule)

    def _start_vae(self) -> None:
        if not self.ready or not self.w.xtPane.isVisible():
            return   # (generated frames have taken over the view: no VAE run for a frame nobody sees)
        t = self.w.timestep
        z = self.photo.at(t, self.w.schedule)
        key = (self.photo, t)
        self._vae_runner.start(vae_frame_job, self.pipe, z, t,
                               on_finished=lambda r, k=key: self._on_vae(r, k))

    def _on_vae(self, result, key) -> None:
        t, u8 = result
        if not self.ready or key != (self.photo, self.w.timestep):
            return   # t moved on (its own decode is on its way) or the latents changed
        self._title(VAE)
        self.frames_vae += 1
        self.w._show_frame(u8, 1, t, full_shape=u8.shape[:2])
        self.frameShown.emit(t, VAE)

    # ----- the strip ---------------------------------------------------------------------------------------
    def update_strip(self, timesteps: list[int]) -> None:
        photo = self._current_photo()
        if photo is None:
            return
        self._strip_runner.start(strip_frames_job, self.pipe, photo, self.w.schedule, list(timesteps),
                                 on_finished=lambda frames, ts=list(timesteps): self._on_strip(frames, ts))

    def _on_strip(self, frames, timesteps) -> None:
        if not self.active:
            return
        self.w.stripView.show_frames(frames, ["D(z₀)"] + [f"t = {t}" for t in timesteps])
        self.stripShown.emit()

    def export_strip(self, path, timesteps: list[int]) -> bool:
        """Write the latent strip (as ``ddpm noise IMAGE --model SD``: decoded above the channels) on a worker;
        ``stripExported(path)`` follows."""
        photo = self._current_photo()
        if photo is None:
            raise ValueError("the photo's latents are not ready yet: try again in a moment")
        self.w.statusBar().showMessage(f"Writing the latent strip to {path}…", 6000)
        self._export_runner.start(export_strip_job, self.pipe, photo, self.w.schedule, list(timesteps), path,
                                  on_finished=self._on_exported,
                                  on_error=lambda e, p=path: self.w.show_error(f"{p}: {e}", title="Export strip"))
        return True

    def _on_exported(self, path: str) -> None:
        self.w.statusBar().showMessage(f"Wrote the latent strip to {path}", 6000)
        self.stripExported.emit(path)


class Takeover(QObject):
    """Generated frames over the image area while a pipeline generates (see the module docstring)."""

    def __init__(self, window, settings: QSettings | None = None):
        super().__init__(window)
        self.w = window
        self._settings = settings
        self.showing = False
        self.action = QAction("Generated frames take over the image area", window, checkable=True)
        self.action.setObjectName("takeoverAction")
        self.action.setToolTip("While a Stable Diffusion pipeline generates, show its live frames (decoded x_t "
                               "beside x̂_0) in the main image area, zoomable, instead of the photo")
        on = True
        if settings is not None:
            from ddpm_gui.settings import bool_value
            v = bool_value(settings, TAKEOVER_KEY)
            on = True if v is None else v
        self.action.setChecked(on)
        self.action.toggled.connect(self._on_toggled)
        window.takeoverBackButton.clicked.connect(self.restore)
        window.timestepChanged.connect(self._on_slider)

    def connect_generate(self, panel) -> None:
        if hasattr(panel, "framePainted"):
            panel.framePainted.connect(self._on_frame)
        if hasattr(panel, "runEnded"):
            panel.runEnded.connect(self._on_run_ended)

    def _pipeline_running(self) -> bool:
        panel = getattr(self.w, "generate_panel", None)
        current = getattr(panel, "current_pipeline", None)
        return bool(panel is not None and getattr(panel, "running", False) and current is not None
                    and current() is not None)

    def _on_frame(self, value) -> None:
        """A frame Generate painted: shown while a pipeline generates, and its replays while it is still shown."""
        if not (isinstance(value, np.ndarray) and value.ndim == 3):
            return
        if self._pipeline_running():
            self.show_frame(value)
        elif self.showing:
            self.w.takeoverPane.set_image(np.ascontiguousarray(value).copy())

    def show_frame(self, u8: np.ndarray) -> None:
        """Show a generated frame (uint8 H×W×3) in the image area, if the toggle is on."""
        if not self.action.isChecked():
            return
        w = self.w
        if not self.showing:
            self.showing = True
            self._hidden = [p for p in (w.xtPane, w.x0Pane, w.noisePane, w.channelsPane) if p.isVisible()]
            for p in self._hidden:
                p.hide()
            w.takeoverPane.show()
        w.takeoverPane.title.setText("<b>Generating</b> — decoded x<sub>t</sub> beside x̂<sub>0</sub>")
        w.takeoverBackButton.setVisible(False)
        w.takeoverPane.set_image(np.ascontiguousarray(u8).copy())

    def _on_run_ended(self) -> None:
        if self.showing:
            self.w.takeoverPane.title.setText("<b>The last pipeline run</b> — move t or click Back to see the photo")
            self.w.takeoverBackButton.setVisible(True)

    def _on_slider(self, _t: int) -> None:
        if self.showing and not self._pipeline_running() and self.w.takeoverBackButton.isVisible():
            self.restore()

    def restore(self) -> None:
        if not self.showing:
            return
        self.showing = False
        self.w.takeoverPane.hide()
        for p in self._hidden:
            p.show()
        self._hidden = []
        self.w._request_frame()

    def _on_toggled(self, on: bool) -> None:
        if self._settings is not None:
            self._settings.setValue(TAKEOVER_KEY, bool(on))
        if not on:
            self.restore()
