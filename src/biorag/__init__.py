"""biorag: does adapting an LLM to medicine help, and which way?"""

__version__ = "0.1.0"
