#!/usr/bin/env python
"""Write the embedded demo data set: synthetic noisy spheres in two classes, in the Medical Segmentation
Decathlon layout the bundles read (dataset.json, imagesTr/, labelsTr/, imagesTs/).

    python pipelines/make_demo_data.py demo_data
    python -m monai.bundle run training --config_file bundles/resunet3d_segmentation/configs/train.json \
        --dataset_dir demo_data --epochs 40 --patch_size "[64,64,64]"
"""

from __future__ import annotations

import argparse

from monai_resunet.data import make_demo_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", nargs="?", default="demo_data", help="dataset folder to write (default: demo_data)")
    parser.add_argument("--num-train", type=int, default=16, help="labelled cases (default: 16)")
    parser.add_argument("--num-test", type=int, default=4, help="unlabelled test cases in imagesTs/ (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    out = make_demo_dataset(args.out_dir, num_train=args.num_train, num_test=args.num_test, seed=args.seed)
    print(f"demo data set written to {out} ({args.num_train} training, {args.num_test} test cases)")


if __name__ == "__main__":
    main()
