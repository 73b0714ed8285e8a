"""The tfkd command with TensorFlow Datasets mocked: random data of the right shapes.

    python tests/helpers/mock_tfds_cli.py NUM_EXAMPLES [tfkd flags...]
"""

import sys

import tensorflow_datasets as tfds

from tfkd import cli

if __name__ == "__main__":
    num_examples = int(sys.argv[1])
    sys.argv = ["tfkd"] + sys.argv[2:]
    with tfds.testing.mock_data(num_examples=num_examples):
        cli.run()
