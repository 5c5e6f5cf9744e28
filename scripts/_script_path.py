"""Imported first by every script: take scripts/ off sys.path, where evaluate.py would shadow `evaluate`."""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]
