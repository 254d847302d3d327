# Raw-pixel baseline for Table 14's pairs (no model): cosine similarity of the mean-centred 28x28
# pixels of the two test photos (faces.pixel_cosine_features); true accept rate (%) per false
# accept rate, the median same-identity score and the highest different-identity scores.
# Measured with: python scripts/faces_pixel_baseline.py runs/faces/identities_data
import sys

import torch

from mobilenets.tasks.faces.data import load_identity_csv, load_pairs_csv
from mobilenets.tasks.faces.make_data import pixel_cosine_features
from mobilenets.tasks.faces.metrics import tar_at_far

torch.set_num_threads(1)
data = sys.argv[1] if len(sys.argv) > 1 else "runs/faces/identities_data"
test = load_identity_csv(f"{data}/test.csv", 28)
a, b, same = load_pairs_csv(f"{data}/pairs.csv", test.paths)
x = pixel_cosine_features(test.images)
s = (x[a] * x[b]).sum(1)
print({far: round(100 * tar_at_far(s[same], s[~same], far)["tar"], 2)
       for far in (1e-4, 1e-3, 1e-2, 1e-1)})
top = [round(v, 3) for v in s[~same].topk(6).values.tolist()]
print("median same-identity score", round(float(s[same].median()), 3),
      "| highest different-identity scores", top)
