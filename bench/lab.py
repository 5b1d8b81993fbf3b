#!/usr/bin/env python3
"""The DL4MI lab (OASIS-1, AD vs CN) as a script: a faithful port of the seed
notebook, timed stage by stage, for issue 8's table 2 (bench/lab_cpu.py).

The notebook's code is kept as it is (MRIDataset reading every `.pt` volume
with torch.load at every access, CropLeftHC/CropRightHC with random_shift=2,
DataLoader(batch_size=4, shuffle=True), CustomNetwork, train()/test() with an
evaluation pass over the train loader after every epoch, soft voting,
AutoEncoder + trainAE/testAE, compute_dataset_features, sklearn's
GaussianMixture). What differs, and why:

- `.cuda()` is `.to(DEVICE)`, the GPU when there is one, else the CPU; and
  `pin_memory` is on only with a GPU (it is meaningless without one).
- `num_workers` is an argument: the lab uses 8; on this 2-core machine the
  bench uses 2 (`--num-workers`).
- `torch.set_num_threads(--threads)`, as hcpipe's worker does.
- `--seed` seeds torch, random and numpy and GaussianMixture's random_state
  (the lab sets no seed), so a run can be repeated.
- testAE's `np.product` is `np.prod` (np.product is gone from numpy 2).
- no plots, and the demographics table is not printed (it is not timed).

Usage:
  lab.py DATASET [--epochs 3] [--ae-epochs 2] [--threads 2] [--num-workers 2]
      DATASET: the folder holding OASIS-1_dataset/ (or OASIS-1_dataset itself).
      Prints one JSON object on stdout: "stages" (wall seconds of load, cnn_left,
      cnn_right, eval, ae, codes, gmm, total) and "metrics"; the per-epoch lines
      the notebook prints go to stderr.
  lab.py DATASET --check-eval WEIGHTS --region left|right --metrics METRICS_JSON
      Loads an hcpipe `train_cnn` checkpoint into the lab's CustomNetwork, runs the
      lab's test() on the validation split, and compares with the `evaluate`
      stage's metrics.json (mean_loss, accuracy, ...; and the >= 62 subset).
      Exits 1 when they differ by more than 1e-5.
"""

import argparse
import json
import random
import sys
import time
import warnings
from copy import deepcopy
from os import path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

# pandas 3 warns about the lab's concat onto an empty DataFrame and its
# reset_index(inplace=True); the lab does both.
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*inplace keyword")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the lab's code


class MRIDataset(Dataset):
    def __init__(self, img_dir, data_df, transform=None):
        self.img_dir = img_dir
        self.transform = transform
        self.data_df = data_df
        self.label_code = {"AD": 1, "CN": 0}
        self.size = self[0]['image'].shape

    def __len__(self):
        return len(self.data_df)

    def __getitem__(self, idx):
        diagnosis = self.data_df.loc[idx, 'diagnosis']
        label = self.label_code[diagnosis]
        participant_id = self.data_df.loc[idx, 'participant_id']
        session_id = self.data_df.loc[idx, 'session_id']
        filename = 'subjects/' + participant_id + '/' + session_id + '/' + \
            'deeplearning_prepare_data/image_based/custom/' + \
            participant_id + '_' + session_id + \
            '_T1w_segm-graymatter_space-Ixi549Space_modulated-off_probability.pt'
        image = torch.load(path.join(self.img_dir, filename))
        if self.transform:
            image = self.transform(image)
        sample = {'image': image, 'label': label,
                  'participant_id': participant_id,
                  'session_id': session_id}
        return sample

    def train(self):
        self.transform.train()

    def eval(self):
        self.transform.eval()


class CropLeftHC(object):
    """Crops the left hippocampus of a MRI non-linearly registered to MNI"""
    def __init__(self, random_shift=0):
        self.random_shift = random_shift
        self.train_mode = True

    def __call__(self, img):
        if self.train_mode:
            x = random.randint(-self.random_shift, self.random_shift)
            y = random.randint(-self.random_shift, self.random_shift)
            z = random.randint(-self.random_shift, self.random_shift)
        else:
            x, y, z = 0, 0, 0
        return img[:, 25 + x:55 + x,
                   50 + y:90 + y,
                   27 + z:57 + z].clone()

    def train(self):
        self.train_mode = True

    def eval(self):
        self.train_mode = False


class CropRightHC(object):
    """Crops the right hippocampus of a MRI non-linearly registered to MNI"""
    def __init__(self, random_shift=0):
        self.random_shift = random_shift
        self.train_mode = True

    def __call__(self, img):
        if self.train_mode:
            x = random.randint(-self.random_shift, self.random_shift)
            y = random.randint(-self.random_shift, self.random_shift)
            z = random.randint(-self.random_shift, self.random_shift)
        else:
            x, y, z = 0, 0, 0
        return img[:, 65 + x:95 + x,
                   50 + y:90 + y,
                   27 + z:57 + z].clone()

    def train(self):
        self.train_mode = True

    def eval(self):
        self.train_mode = False


class PadMaxPool3d(nn.Module):
    """A MaxPooling module which deals with odd sizes with padding"""
    def __init__(self, kernel_size, stride, return_indices=False, return_pad=False):
        super(PadMaxPool3d, self).__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.pool = nn.MaxPool3d(kernel_size, stride, return_indices=return_indices)
        self.pad = nn.ConstantPad3d(padding=0, value=0)
        self.return_indices = return_indices
        self.return_pad = return_pad

    def set_new_return(self, return_indices=True, return_pad=True):
        self.return_indices = return_indices
        self.return_pad = return_pad
        self.pool.return_indices = return_indices

    def forward(self, f_maps):
        coords = [self.stride - f_maps.size(i + 2) % self.stride for i in range(3)]
        for i, coord in enumerate(coords):
            if coord == self.stride:
                coords[i] = 0
        self.pad.padding = (coords[2], 0, coords[1], 0, coords[0], 0)
        if self.return_indices:
            output, indices = self.pool(self.pad(f_maps))
            if self.return_pad:
                return output, indices, (coords[2], 0, coords[1], 0, coords[0], 0)
            else:
                return output, indices
        else:
            output = self.pool(self.pad(f_maps))
            if self.return_pad:
                return output, (coords[2], 0, coords[1], 0, coords[0], 0)
            else:
                return output


class CustomNetwork(nn.Module):
    def __init__(self):
        super(CustomNetwork, self).__init__()
        self.convolutions = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1),
            # Size 8@30x40x30
            nn.BatchNorm3d(8),
            nn.LeakyReLU(),
            PadMaxPool3d(2, 2),
            # Size 8@15x20x15
            nn.Conv3d(8, 16, 3, padding=1),
            # Size 16@15x20x15
            nn.BatchNorm3d(16),
            nn.LeakyReLU(),
            PadMaxPool3d(2, 2),
            # Size 16@8x10x8)
            nn.Conv3d(16, 32, 3, padding=1),
            # Size 32@8x10x8
            nn.BatchNorm3d(32),
            nn.LeakyReLU(),
            PadMaxPool3d(2, 2),
            # Size 32@4x5x4
        )
        self.linear = nn.Sequential(
            nn.Dropout(p=0.5),
            nn.Linear(32 * 4 * 5 * 4, 2)
        )

    def forward(self, x):
        x = self.convolutions(x)
        x = x.view(x.size(0), -1)
        x = self.linear(x)
        return x


def train(model, train_loader, criterion, optimizer, n_epochs):
    best_model = deepcopy(model)
    train_best_loss = np.inf
    for epoch in range(n_epochs):
        model.train()
        train_loader.dataset.train()
        for i, data in enumerate(train_loader, 0):
            images, labels = data['image'].to(DEVICE), data['label'].to(DEVICE)
            outputs = model(images)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        _, train_metrics = test(model, train_loader, criterion)
        log(f'Epoch %i: loss = %f, balanced accuracy = %f'
            % (epoch, train_metrics['mean_loss'],
               train_metrics['balanced_accuracy']))
        if train_metrics['mean_loss'] < train_best_loss:
            best_model = deepcopy(model)
            train_best_loss = train_metrics['mean_loss']
    return best_model


def test(model, data_loader, criterion):
    model.eval()
    data_loader.dataset.eval()
    columns = ["participant_id", "proba0", "proba1",
               "true_label", "predicted_label"]
    results_df = pd.DataFrame(columns=columns)
    total_loss = 0
    with torch.no_grad():
        for i, data in enumerate(data_loader, 0):
            images, labels = data['image'].to(DEVICE), data['label'].to(DEVICE)
            outputs = model(images)
            loss = criterion(outputs, labels)
            total_loss += loss.item()
            probs = nn.Softmax(dim=1)(outputs)
            _, predicted = torch.max(outputs.data, 1)
            for idx, sub in enumerate(data['participant_id']):
                row = [sub,
                       probs[idx, 0].item(), probs[idx, 1].item(),
                       labels[idx].item(), predicted[idx].item()]
                row_df = pd.DataFrame([row], columns=columns)
                results_df = pd.concat([results_df, row_df])
    results_metrics = compute_metrics(results_df.true_label.values, results_df.predicted_label.values)
    results_df.reset_index(inplace=True, drop=True)
    results_metrics['mean_loss'] = total_loss / len(data_loader.dataset)
    return results_df, results_metrics


def compute_metrics(ground_truth, prediction):
    """Computes the accuracy, sensitivity, specificity and balanced accuracy"""
    tp = np.sum((prediction == 1) & (ground_truth == 1))
    tn = np.sum((prediction == 0) & (ground_truth == 0))
    fp = np.sum((prediction == 1) & (ground_truth == 0))
    fn = np.sum((prediction == 0) & (ground_truth == 1))
    metrics_dict = dict()
    metrics_dict['accuracy'] = (tp + tn) / (tp + tn + fp + fn)
    if tp + fn != 0:
        metrics_dict['sensitivity'] = tp / (tp + fn)
    else:
        metrics_dict['sensitivity'] = 0.0
    if fp + tn != 0:
        metrics_dict['specificity'] = tn / (fp + tn)
    else:
        metrics_dict['specificity'] = 0.0
    metrics_dict['balanced_accuracy'] = (metrics_dict['sensitivity'] + metrics_dict['specificity']) / 2
    return metrics_dict


def softvoting(leftHC_df, rightHC_df):
    df1 = leftHC_df.set_index('participant_id', drop=True)
    df2 = rightHC_df.set_index('participant_id', drop=True)
    results_df = pd.DataFrame(index=df1.index.values,
                              columns=['true_label', 'predicted_label',
                                       'proba0', 'proba1'])
    results_df.true_label = df1.true_label
    results_df.proba1 = 0.5 * df1.proba1 + 0.5 * df2.proba1
    results_df.proba0 = 0.5 * df1.proba0 + 0.5 * df2.proba0
    results_df.predicted_label = (0.5 * df1.proba1 + 0.5 * df2.proba1 > 0.5).astype(int)
    return results_df


class CropMaxUnpool3d(nn.Module):
    def __init__(self, kernel_size, stride):
        super(CropMaxUnpool3d, self).__init__()
        self.unpool = nn.MaxUnpool3d(kernel_size, stride)

    def forward(self, f_maps, indices, padding=None):
        output = self.unpool(f_maps, indices)
        if padding is not None:
            x1 = padding[4]
            y1 = padding[2]
            z1 = padding[0]
            output = output[:, :, x1::, y1::, z1::]
        return output


class AutoEncoder(nn.Module):
    def __init__(self):
        super(AutoEncoder, self).__init__()
        # Initial size (30, 40, 30)
        self.encoder = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1),
            nn.BatchNorm3d(8),
            nn.LeakyReLU(),
            PadMaxPool3d(2, 2, return_indices=True, return_pad=True),
            # Size (15, 20, 15)
            nn.Conv3d(8, 16, 3, padding=1),
            nn.BatchNorm3d(16),
            nn.LeakyReLU(),
            PadMaxPool3d(2, 2, return_indices=True, return_pad=True),
            # Size (8, 10, 8)
            nn.Conv3d(16, 32, 3, padding=1),
            nn.BatchNorm3d(32),
            nn.LeakyReLU(),
            PadMaxPool3d(2, 2, return_indices=True, return_pad=True),
            # Size (4, 5, 4)
            nn.Conv3d(32, 1, 1),
            # Size (4, 5, 4)
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose3d(1, 32, 1),
            # Size (4, 5, 4)
            CropMaxUnpool3d(2, 2),
            nn.ConvTranspose3d(32, 16, 3, padding=1),
            nn.BatchNorm3d(16),
            nn.LeakyReLU(),
            # Size (8, 10, 8)
            CropMaxUnpool3d(2, 2),
            nn.ConvTranspose3d(16, 8, 3, padding=1),
            nn.BatchNorm3d(8),
            nn.LeakyReLU(),
            # Size (15, 20, 15)
            CropMaxUnpool3d(2, 2),
            nn.ConvTranspose3d(8, 1, 3, padding=1),
            nn.BatchNorm3d(1),
            nn.Sigmoid()
            # Size (30, 40, 30)
        )

    def forward(self, x):
        indices_list = []
        pad_list = []
        for layer in self.encoder:
            if isinstance(layer, PadMaxPool3d):
                x, indices, pad = layer(x)
                indices_list.append(indices)
                pad_list.append(pad)
            else:
                x = layer(x)
        code = x.view(x.size(0), -1)
        for layer in self.decoder:
            if isinstance(layer, CropMaxUnpool3d):
                x = layer(x, indices_list.pop(), pad_list.pop())
            else:
                x = layer(x)
        return code, x


def trainAE(model, train_loader, criterion, optimizer, n_epochs):
    best_model = deepcopy(model)
    train_best_loss = np.inf
    for epoch in range(n_epochs):
        model.train()
        train_loader.dataset.train()
        for i, data in enumerate(train_loader, 0):
            images, labels = data['image'].to(DEVICE), data['label'].to(DEVICE)
            _, outputs = model((images))
            loss = criterion(outputs, images)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        mean_loss = testAE(model, train_loader, criterion)
        log(f'Epoch %i: loss = %f' % (epoch, mean_loss))
        if mean_loss < train_best_loss:
            best_model = deepcopy(model)
            train_best_loss = mean_loss
    return best_model


def testAE(model, data_loader, criterion):
    model.eval()
    data_loader.dataset.eval()
    total_loss = 0
    with torch.no_grad():
        for i, data in enumerate(data_loader, 0):
            images, labels = data['image'].to(DEVICE), data['label'].to(DEVICE)
            _, outputs = model((images))
            loss = criterion(outputs, images)
            total_loss += loss.item()
    return total_loss / len(data_loader.dataset) / np.prod(data_loader.dataset.size)


def compute_dataset_features(data_loader, model):
    concat_codes = torch.Tensor().to(DEVICE)
    concat_labels = torch.LongTensor()
    concat_names = []
    for data in data_loader:
        image = data['image'].to(DEVICE)
        labels = data['label']
        names = data['participant_id']
        code, _ = model(image)
        concat_codes = torch.cat([concat_codes, code.squeeze(1)], 0)
        concat_labels = torch.cat([concat_labels, labels])
        concat_names = concat_names + names
    concat_codes_np = concat_codes.cpu().detach().numpy()
    concat_labels_np = concat_labels.numpy()
    concat_names = np.array(concat_names)[:, np.newaxis]
    return concat_codes_np, concat_labels_np, concat_names


# ---------------------------------------------------------------- the script


def dataset_root(folder):
    """The OASIS-1_dataset folder: FOLDER itself or FOLDER/OASIS-1_dataset."""
    for cand in (path.join(folder, 'OASIS-1_dataset'), folder):
        if path.isfile(path.join(cand, 'tsv_files', 'lab_1', 'train.tsv')):
            return cand
    sys.exit(f"{folder}: no tsv_files/lab_1/train.tsv in it nor in its OASIS-1_dataset/; "
             "give the dataset stage's folder (`hcpipe show PIPELINE dataset --json` prints it)")


def plain(metrics):
    """numpy scalars -> floats, for JSON."""
    return {k: float(v) for k, v in metrics.items()}


def make_loaders(img_dir, train_df, valid_df, transform, num_workers):
    pin = DEVICE.type == 'cuda'
    train_ds = MRIDataset(img_dir, train_df, transform=transform)
    valid_ds = MRIDataset(img_dir, valid_df, transform=transform)
    train_loader = DataLoader(train_ds, batch_size=4, shuffle=True,
                              num_workers=num_workers, pin_memory=pin)
    # A high batch size improves test speed
    valid_loader = DataLoader(valid_ds, batch_size=32, shuffle=False,
                              num_workers=num_workers, pin_memory=pin)
    return train_loader, valid_loader


def old_metrics(valid_df_results, OASIS_df):
    merged = valid_df_results.merge(OASIS_df, how='left', on='participant_id', sort=False)
    old = merged[(merged.age_bl >= 62)]
    return plain(compute_metrics(old.true_label, old.predicted_label))


def run_lab(args):
    root = dataset_root(args.dataset)
    stages = {}
    metrics = {}
    t_all = time.perf_counter()

    t = time.perf_counter()
    OASIS_df = pd.read_csv(path.join(root, 'tsv_files/lab_1/OASIS_BIDS.tsv'), sep='\t')
    train_df = pd.read_csv(path.join(root, 'tsv_files/lab_1/train.tsv'), sep='\t')
    valid_df = pd.read_csv(path.join(root, 'tsv_files/lab_1/validation.tsv'), sep='\t')
    img_dir = path.join(root, 'CAPS')
    train_loaderLeftHC, valid_loaderLeftHC = make_loaders(
        img_dir, train_df, valid_df, CropLeftHC(2), args.num_workers)
    train_loaderRightHC, valid_loaderRightHC = make_loaders(
        img_dir, train_df, valid_df, CropRightHC(2), args.num_workers)
    stages['load'] = time.perf_counter() - t

    results = {}
    for side, train_loader in (('left', train_loaderLeftHC), ('right', train_loaderRightHC)):
        t = time.perf_counter()
        model = CustomNetwork().to(DEVICE)
        criterion = nn.CrossEntropyLoss(reduction='sum')
        optimizer = torch.optim.Adam(model.parameters(), 10**-4)
        log(f'CNN {side} HC')
        results[side] = train(model, train_loader, criterion, optimizer, args.epochs)
        stages[f'cnn_{side}'] = time.perf_counter() - t

    t = time.perf_counter()
    criterion = nn.CrossEntropyLoss(reduction='sum')
    valid = {}
    for side, train_loader, valid_loader in (
            ('left', train_loaderLeftHC, valid_loaderLeftHC),
            ('right', train_loaderRightHC, valid_loaderRightHC)):
        valid_results_df, valid_m = test(results[side], valid_loader, criterion)
        _, train_m = test(results[side], train_loader, criterion)
        valid[side] = valid_results_df
        metrics[f'{side}_validation'] = plain(valid_m)
        metrics[f'{side}_train'] = plain(train_m)
        metrics[f'{side}_old'] = old_metrics(valid_results_df, OASIS_df)
    vote = softvoting(valid['left'], valid['right'])
    metrics['soft_vote_validation'] = plain(compute_metrics(vote.true_label, vote.predicted_label))
    stages['eval'] = time.perf_counter() - t

    t = time.perf_counter()
    AELeftHC = AutoEncoder().to(DEVICE)
    criterion = nn.MSELoss(reduction='sum')
    optimizer = torch.optim.Adam(AELeftHC.parameters(), 10**-2)
    log('AutoEncoder left HC')
    best_AELeftHC = trainAE(AELeftHC, train_loaderLeftHC, criterion, optimizer, args.ae_epochs)
    metrics['ae_train_loss'] = float(testAE(best_AELeftHC, train_loaderLeftHC, criterion))
    stages['ae'] = time.perf_counter() - t

    t = time.perf_counter()
    train_codes, train_labels, names = compute_dataset_features(train_loaderLeftHC, best_AELeftHC)
    stages['codes'] = time.perf_counter() - t

    t = time.perf_counter()
    from sklearn import mixture  # imported here, in the timed stage, as the lab's cell does
    model = mixture.GaussianMixture(2, random_state=args.seed)
    model.fit(train_codes)
    train_predict = model.predict(train_codes)
    metrics['gmm_train'] = plain(compute_metrics(train_labels, train_predict))
    stages['gmm'] = time.perf_counter() - t

    stages['total'] = time.perf_counter() - t_all

    # Not part of the lab: one bare pass of the train loader (read + crop, no
    # model), to show what the lab's every-epoch re-reading costs.
    t = time.perf_counter()
    train_loaderLeftHC.dataset.train()
    for _ in train_loaderLeftHC:
        pass
    extra = {'loader_pass_s': time.perf_counter() - t}
    return {'stages': stages, 'metrics': metrics, 'extra': extra,
            'config': {'epochs': args.epochs, 'ae_epochs': args.ae_epochs,
                       'threads': torch.get_num_threads(), 'num_workers': args.num_workers,
                       'device': str(DEVICE), 'seed': args.seed,
                       'n_train': len(train_df), 'n_validation': len(valid_df)}}


def check_eval(args):
    """The lab's test() on hcpipe's weights vs hcpipe's `evaluate` metrics."""
    from safetensors.torch import load_file
    root = dataset_root(args.dataset)
    OASIS_df = pd.read_csv(path.join(root, 'tsv_files/lab_1/OASIS_BIDS.tsv'), sep='\t')
    valid_df = pd.read_csv(path.join(root, 'tsv_files/lab_1/validation.tsv'), sep='\t')
    transform = {'left': CropLeftHC(2), 'right': CropRightHC(2)}[args.region]
    valid_ds = MRIDataset(path.join(root, 'CAPS'), valid_df, transform=transform)
    valid_loader = DataLoader(valid_ds, batch_size=32, shuffle=False, num_workers=0)
    model = CustomNetwork().to(DEVICE)
    model.load_state_dict(load_file(args.check_eval), strict=True)
    results_df, lab = test(model, valid_loader, nn.CrossEntropyLoss(reduction='sum'))
    lab = plain(lab)
    with open(args.metrics) as f:
        hc = json.load(f)
    out = {'region': args.region, 'validation': {}, 'old': {}}
    worst = 0.0
    for key, lab_v in lab.items():
        hc_v = hc['validation'][key]
        out['validation'][key] = {'lab': lab_v, 'hcpipe': hc_v, 'diff': abs(lab_v - hc_v)}
        worst = max(worst, abs(lab_v - hc_v))
    if 'old' in hc:
        for key, lab_v in old_metrics(results_df, OASIS_df).items():
            hc_v = hc['old'][key]
            out['old'][key] = {'lab': lab_v, 'hcpipe': hc_v, 'diff': abs(lab_v - hc_v)}
            worst = max(worst, abs(lab_v - hc_v))
    out['max_diff'] = worst
    out['agree'] = worst <= 1e-5
    print(json.dumps(out))
    return 0 if out['agree'] else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('dataset')
    ap.add_argument('--epochs', type=int, default=30)
    ap.add_argument('--ae-epochs', type=int, default=30)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--num-workers', type=int, default=2)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--check-eval', metavar='WEIGHTS')
    ap.add_argument('--region', choices=['left', 'right'], default='left')
    ap.add_argument('--metrics', metavar='METRICS_JSON')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    if args.check_eval:
        if not args.metrics:
            ap.error('--check-eval needs --metrics (the evaluate stage\'s metrics.json)')
        sys.exit(check_eval(args))
    print(json.dumps(run_lab(args)))


if __name__ == '__main__':
    main()
