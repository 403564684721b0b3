"""docs/screenshots/lab2d.png: the 2D tab after Learn (4,000 steps), Measure (5…100 steps, 1,000 particles) and
Generate (DDPM vs DDIM, 50 steps, 2,000 particles) on two moons, at t = 120. Run from the repository root:
``QT_QPA_PLATFORM=offscreen OMP_NUM_THREADS=1 .venv/bin/python docs/screenshots/lab2d_screenshot.py``."""
import sys, time
from PySide6.QtWidgets import QApplication
app = QApplication(sys.argv)
import torch; torch.set_num_threads(1)
from ddpm_gui.main_window import MainWindow
from ddpm_gui.lab2d_panel import Lab2DPanel
w = MainWindow(); w.resize(1440, 900); w.show()
p = Lab2DPanel.install(w); w.show_panel(p)
def spin(sec):
    end=time.time()+sec
    while time.time()<end: app.processEvents(); time.sleep(0.01)
def wait(cond, sec=120):
    end=time.time()+sec
    while not cond() and time.time()<end: app.processEvents(); time.sleep(0.01)
p.toggle_learn(); spin(0.5)
wait(lambda: p.learnButton.text()=="Learn more", 120)
p.stepsListEdit.setText("5,10,20,50,100"); p.particlesSpin.setValue(1000)
p.measure(); spin(0.5); wait(lambda: p.measureButton.isEnabled(), 300)
p.particlesSpin.setValue(2000)
p.generate(); spin(0.3); wait(lambda: p.generateButton.isEnabled(), 120)
w.set_timestep(120); spin(0.5)
p.redraw(fields_now=True); spin(0.5)
print(p.status_text, len(p.rows))
w.grab().save("docs/screenshots/lab2d.png")
