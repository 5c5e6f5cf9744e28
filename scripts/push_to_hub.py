"""Publish a trained model folder (and its Gradio demo Space) to the Hub, or only stage the files with --stage_dir."""

import _script_path  # noqa: F401, I001 - first: keeps scripts/ (and its evaluate.py) off sys.path
import logging
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_mri.hub import HubPushError, push, stage_upload


@dataclass
class PushArguments:
    model_dir: str = field(metadata={"help": "Model folder written by scripts/train.py (--output_dir)."})
    repo_id: str = field(metadata={"help": "Model repo, e.g. me/mri-vgg16 (no namespace: your user)."})
    private: bool = field(default=False, metadata={"help": "Create the model repo (and Space) as private."})
    revision: str | None = field(default=None, metadata={"help": "Branch to push to (created if needed)."})
    commit_message: str = field(
        default="Upload brain-MRI VGG16 classifier (hf_mri)", metadata={"help": "Commit message."}
    )
    space_id: str | None = field(default=None, metadata={"help": "Also push the Gradio demo Space, e.g. me/mri-demo."})
    stage_dir: str | None = field(
        default=None, metadata={"help": "No network: only write the files that would be uploaded into this folder."}
    )


def main(argv: list[str] | None = None) -> int:
    """Push (or stage) and log where things went; return 1 with a clear message if the push cannot happen."""
    (args,) = HfArgumentParser(PushArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("push_to_hub")
    if args.stage_dir:
        if "/" not in args.repo_id or (args.space_id and "/" not in args.space_id):
            log.error("--stage_dir needs full ids (namespace/name) for --repo_id and --space_id")
            return 1
        try:
            staged = stage_upload(
                args.model_dir, args.stage_dir, repo_id=args.repo_id, space_id=args.space_id, revision=args.revision
            )
        except (OSError, ValueError, HubPushError) as err:
            log.error("%s", err)
            return 1
        log.info("Staged upload in %s (nothing was sent to the Hub)", staged)
        return 0
    try:
        urls = push(
            args.model_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            space_id=args.space_id,
        )
    except HubPushError as err:
        log.error("%s", err)
        return 1
    for kind, url in urls.items():
        log.info("%s: %s", kind, url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
