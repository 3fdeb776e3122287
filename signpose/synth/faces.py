"""Generated faces: identity shape, head pose, detector noise and the two annotation conventions.

The face is the 68-point iBUG-300W shape in 3-D (unit = jaw width; origin between the eyes; y down,
z towards the camera; image left is the subject's right: points 0, 17-21, 36-41, 48).

**Identity.** Every video draws one face shape. Each measurement is a relative deviation from the
template, normal with the coefficient of variation (SD / mean) of the adult norms in L. G. Farkas,
*Anthropometry of the Head and Face*, 2nd ed., Raven Press 1994 (North American Caucasian adults,
18-25 y; means in mm, male / female): face width zy-zy 137 / 130 (SD 4.3 / 5.3), face height n-gn
121 / 112 (SD 6.8 / 5.2), biocular width ex-ex 91 / 87 (SD 3.2 / 3.5), nose height n-sn 53 / 50
(SD 3.3 / 3.1), mouth width ch-ch 54 / 50 (SD 3.3 / 3.2), lower face height sn-gn 72 / 64 (SD 6.0 /
4.8), mandible width go-go 97 / 91 (SD 5.8 / 5.6). The CVs (3.5-8 %) are widened by :data:`SPREAD`
(x1.6) to span both sexes and populations other than the norm group, and draws are clipped at 2.5 SD.
The Farkas figures were written from the book, not from a machine-readable copy; as a check, an
independent adult sample measured the same way (Korean adults, J. Korean Assoc. Maxillofac. Plast.
Reconstr. Surg. 2019, doi:10.1186/s40902-019-0191-7, table 9: zy-zy 133.8 / 130.1 mm, SD 4.6 / 3.5;
ch-ch 55.9 / 52.0, SD 3.3 / 4.0; go-go 106.6 / 96.8, SD 5.9 / 2.9; ex-ex 98.2 / 94.4, SD 3.5 / 4.9;
n-sn 51.0 / 47.6, SD 1.9 / 3.1) has coefficients of variation of 3.0-7.7 %, the range used here.
Jaw shape (square to pointed: the exponent of the contour) and brow height have no single Farkas
measurement; their ranges are set so the generated spread covers the real samples (docs/data.md).

**Conventions.** Two reach this project: manual iBUG-68 annotation (OpenPose's face model was trained
on it; the jaw contour follows the visible cheek edge down to the chin) and MediaPipe's 468-point
mesh reduced to 68 points by :data:`signpose.io.pose_files.HOLISTIC_FACE_TO_IBUG68`, whose jaw
points sit on the mesh's face oval: narrower, the chin higher and the points spaced unevenly.
:data:`MEDIAPIPE_JAW_OFFSET` is that difference measured on the real samples in ``data/real``
(mean of the two Holistic files minus the OpenPose file after aligning the eyes; made left-right
symmetric).
"""

from __future__ import annotations

import numpy as np

CONVENTIONS = ("ibug68", "mediapipe68")
P_MEDIAPIPE = 0.5  # share of generated videos annotated in the MediaPipe convention
SPREAD = 1.6
# Coefficients of variation (Farkas 1994, mean of male and female SD / mean), see the module docstring.
CV = {"face_width": 0.036, "face_height": 0.051, "eye_width": 0.038, "nose_length": 0.062,
      "mouth_width": 0.063, "lower_face": 0.078, "jaw_width": 0.061}
JAW_EXPONENT = (0.45, 1.0)    # contour |cos|^e: 0.45 square, 1.0 pointed (template 0.7)
BROW_SHIFT = (-0.06, 0.05)   # brow height above the eyes, template units (negative = higher)

# Head pose of signing (radians): a per-video bias (signers rarely face the camera exactly) and the
# per-sign range around it; signers turn and nod more than they tilt.
HEAD_BIAS_SD = {"yaw": 0.10, "pitch": 0.08, "roll": 0.05}
HEAD_RANGE = {"yaw": 0.35, "pitch": 0.18, "roll": 0.15}

# Detector noise per point, template units: the jaw contour is the least certain, eye corners the most.
_NOISE_BY_REGION = ((range(0, 17), 0.012), (range(17, 27), 0.008), (range(27, 36), 0.004),
                    (range(36, 48), 0.004), (range(48, 68), 0.005))
POINT_NOISE = np.zeros(68)
for _region, _sd in _NOISE_BY_REGION:
    POINT_NOISE[list(_region)] = _sd
BIAS_NOISE = 0.5  # per-video systematic offset per point, as a share of POINT_NOISE

# MediaPipe minus iBUG jaw (points 0-16), template units (x, y); measured as described above.
MEDIAPIPE_JAW_OFFSET = np.array([
    [0.060, -0.099], [0.062, -0.017], [0.060, -0.045], [0.084, 0.042], [0.079, -0.001], [0.048, -0.053],
    [0.054, -0.054], [0.052, -0.066], [0.000, -0.076], [-0.052, -0.066], [-0.054, -0.054],
    [-0.048, -0.053], [-0.079, -0.001], [-0.084, 0.042], [-0.060, -0.045], [-0.062, -0.017],
    [-0.060, -0.099]])


def _jaw(exponent: float) -> np.ndarray:
    theta = np.linspace(0.0, np.pi, 17)
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([-0.5 * np.sign(c) * np.abs(c) ** exponent, -0.08 + 0.93 * s ** 1.4, -0.35 + 0.5 * s], 1)


def _face_template() -> np.ndarray:
    """The mean face. Mouth, nose base and brows are placed where the real iBUG-annotated sample has
    them relative to the eyes (data/real/openpose.pose)."""
    pts = np.zeros((68, 3))
    pts[0:17] = _jaw(0.7)
    t = np.linspace(0.0, 1.0, 5)
    pts[17:22, 0] = np.linspace(-0.42, -0.08, 5)
    pts[17:22, 1] = -0.11 - 0.05 * np.sin(np.pi * (0.3 + 0.7 * t))
    pts[17:22, 2] = 0.1 + 0.12 * t
    pts[22:27] = pts[17:22][::-1] * [-1, 1, 1]
    pts[27:31] = np.stack([np.zeros(4), [0.0, 0.08, 0.16, 0.24], [0.25, 0.32, 0.40, 0.48]], 1)
    pts[31:36] = np.stack([[-0.09, -0.045, 0, 0.045, 0.09], [0.295, 0.31, 0.32, 0.31, 0.295],
                           [0.30, 0.35, 0.38, 0.35, 0.30]], 1)
    right_eye = [(-0.295, 0.0), (-0.235, -0.04), (-0.165, -0.04), (-0.105, 0.0), (-0.165, 0.035),
                 (-0.235, 0.035)]
    pts[36:42, :2] = right_eye
    pts[42:48, :2] = [(-x, y) for x, y in [right_eye[3], right_eye[2], right_eye[1], right_eye[0],
                                           right_eye[5], right_eye[4]]]
    pts[36:48, 2] = 0.2
    pts[48:60, :2] = [(-0.18, 0.47), (-0.11, 0.43), (-0.04, 0.415), (0, 0.42), (0.04, 0.415),
                      (0.11, 0.43), (0.18, 0.47), (0.11, 0.52), (0.05, 0.545), (0, 0.55),
                      (-0.05, 0.545), (-0.11, 0.52)]
    pts[48:60, 2] = 0.25
    pts[[48, 54], 2] = 0.18
    pts[60:68, :2] = [(-0.15, 0.475), (-0.05, 0.465), (0, 0.467), (0.05, 0.465), (0.15, 0.475),
                      (0.05, 0.48), (0, 0.482), (-0.05, 0.48)]
    pts[60:68, 2] = 0.24
    return pts


FACE_TEMPLATE = _face_template()
_JAW_WEIGHT = np.sin(np.linspace(0.0, np.pi, 17)) ** 2  # how much each jaw point drops with the mouth
_LOWER_OUTER = np.array([55, 56, 57, 58, 59])
_LOWER_INNER = np.array([65, 66, 67])
_UPPER_INNER = np.array([61, 62, 63])
_MOUTH_CORNERS = np.array([48, 54, 60, 64])
_UPPER_LIDS = np.array([37, 38, 43, 44])
_LOWER_LIDS = np.array([40, 41, 46, 47])
_EYES, _NOSE, _MOUTH, _BROWS = slice(36, 48), slice(27, 36), slice(48, 68), slice(17, 27)


def face_identity(seed: int, video: int) -> dict:
    """The face of video ``video``: relative measurements, jaw exponent, brow shift and convention.
    Drawn from its own generator so it can be asked for without generating the video."""
    rng = np.random.default_rng([seed, video, 68])
    ident = {name: 1.0 + SPREAD * cv * float(np.clip(rng.normal(), -2.5, 2.5)) for name, cv in CV.items()}
    ident["jaw_exponent"] = float(rng.uniform(*JAW_EXPONENT))
    ident["brow_shift"] = float(rng.uniform(*BROW_SHIFT))
    ident["convention"] = CONVENTIONS[int(rng.random() < P_MEDIAPIPE)]
    ident["bias"] = rng.normal(0.0, 1.0, (68, 2)) * (BIAS_NOISE * POINT_NOISE[:, None])
    ident["head_bias"] = {k: float(rng.normal(0.0, sd)) for k, sd in HEAD_BIAS_SD.items()}
    return ident


def identity_shape(ident: dict) -> np.ndarray:
    """(68, 3) face of one identity, in the iBUG convention (the convention is applied after pose)."""
    pts = FACE_TEMPLATE.copy()
    jaw = _jaw(ident["jaw_exponent"])
    pts[0:17, 0] = jaw[:, 0] * ident["face_width"]
    pts[3:14, 0] *= ident["jaw_width"]  # the mandible, gonion to gonion
    pts[0:17, 1] = jaw[:, 1] * ident["face_height"] * ident["lower_face"] ** (jaw[:, 1].clip(0, None) / 0.85)
    pts[_EYES, 0] *= ident["eye_width"]
    nose = pts[_NOSE]
    nose[:, 1] *= ident["nose_length"]
    lower = ident["face_height"] * ident["lower_face"]
    mouth = pts[_MOUTH]
    mouth_centre = mouth[:, 1].mean()
    mouth[:, 0] *= ident["mouth_width"]
    mouth[:, 1] += mouth_centre * (lower - 1.0)  # the mouth moves with the lower face height
    pts[_BROWS, 1] += ident["brow_shift"]
    pts[_BROWS, 0] *= ident["face_width"]
    return pts


def face_points(shape: np.ndarray, n_frames: int, mouth, smile, brow, blink, yaw, pitch, roll) -> np.ndarray:
    """(T, 68, 3) face of one identity with expression (per-frame mouth opening, smile, brow, blink)
    and head rotation applied."""
    mouth, smile, brow = mouth[:, None], smile[:, None], brow[:, None]
    pts = np.repeat(shape[None], n_frames, axis=0)
    pts[:, _LOWER_OUTER, 1] += 0.16 * mouth
    pts[:, _LOWER_INNER, 1] += 0.15 * mouth
    pts[:, _UPPER_INNER, 1] -= 0.02 * mouth
    pts[:, 0:17, 1] += 0.12 * mouth * _JAW_WEIGHT
    pts[:, _MOUTH_CORNERS, 1] += 0.04 * mouth - 0.04 * smile
    pts[:, _MOUTH_CORNERS, 0] *= 1.0 + 0.15 * smile - 0.08 * mouth
    pts[:, 17:27, 1] -= 0.06 * brow
    furrow = np.clip(-brow, 0, None)
    pts[:, [20, 21], 0] += 0.03 * furrow
    pts[:, [22, 23], 0] -= 0.03 * furrow
    pts[:, _UPPER_LIDS, 1] += 0.07 * blink[:, None]
    pts[:, _LOWER_LIDS, 1] -= 0.005 * blink[:, None]
    rot = rotation(yaw, pitch, roll)
    pivot = np.array([0.0, 0.4, 0.0])
    return (pts - pivot) @ np.transpose(rot, (0, 2, 1)) + pivot


def annotate(face: np.ndarray, ident: dict) -> np.ndarray:
    """(T, 68, 3) posed face -> (T, 68, 2) as its convention's detector reports it (template units)."""
    xy = face[..., :2].copy()
    if ident["convention"] == "mediapipe68":
        xy[:, 0:17] += MEDIAPIPE_JAW_OFFSET * np.array([ident["face_width"], ident["face_height"]])
    return xy + ident["bias"]


def rotation(yaw, pitch, roll) -> np.ndarray:
    """(T,) angles -> (T, 3, 3) rotation = Rz(roll) @ Ry(yaw) @ Rx(pitch)."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1), np.stack([zero, sp, cp], -1)], -2)
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2)
    rz = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1), np.stack([zero, zero, one], -1)], -2)
    return rz @ ry @ rx


def blinks(rng, n_frames: int) -> np.ndarray:
    blink = np.zeros(n_frames)
    t = rng.uniform(5, 60)
    while t < n_frames:
        for k, v in enumerate((0.5, 1.0, 1.0, 0.5)):
            i = int(t) + k
            if i < n_frames:
                blink[i] = v
        t += rng.uniform(40, 110)
    return blink


def expression_keys(rng, n_keys: int, ident: dict) -> dict:
    """Keyframe values of mouth opening, smile, brow and head pose (rest at both ends: damped)."""
    keys = {}
    talking = rng.random(n_keys) < 0.5
    keys["mouth"] = np.where(talking, rng.uniform(0.1, 0.8, n_keys), 0.0)
    keys["smile"] = rng.uniform(-0.2, 0.8, n_keys) * (rng.random(n_keys) < 0.4)
    keys["brow"] = rng.uniform(-0.8, 1.0, n_keys) * (rng.random(n_keys) < 0.6)
    for name, half in HEAD_RANGE.items():
        keys[name] = rng.uniform(-half, half, n_keys)
    for name in ("mouth", "smile", "brow", *HEAD_RANGE):
        keys[name][[0, -1]] = keys[name][[0, -1]] * 0.3
    for name, bias in ident["head_bias"].items():
        keys[name] = keys[name] + bias
    return keys
