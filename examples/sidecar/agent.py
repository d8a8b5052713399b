#!/usr/bin/env python3
"""A jetagent agent in Python, run per task by `agent run` (the exec handler).

The contract (docs/configuration.md, "The exec contract"):
  stdin   the task's envelope as one line of JSON; its "payload" is the task
  stdout  the answer: one JSON value, the payload of the reply
  exit 0  success; 75 (EX_TEMPFAIL): try again later; anything else: the
          task is bad, it goes to the dead-letter queue
  stderr  logged by the agent, with the envelope id

The runtime does the rest: retries with backoff, deadlines, heartbeats,
circuit breakers, dead letters. Standard library only.

This agent counts the words of {"text": "..."}. With "busy_until": N it
says "try again later" until the N-th delivery, to show the retries.
"""

import json
import os
import sys

EX_TEMPFAIL = 75


class TryLater(Exception):
    """A failure worth retrying: the agent redelivers the task after a delay."""


class BadTask(Exception):
    """A task that can never succeed: it is dead-lettered at once."""


def handle(payload, attempt):
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
        raise BadTask('payload needs a "text" string, got %r' % (payload,))
    if attempt < payload.get("busy_until", 0):
        raise TryLater("busy on attempt %d, try again later" % attempt)
    text = payload["text"]
    return {"words": len(text.split()), "upper": text.upper(), "attempt": attempt}


def main():
    envelope = json.load(sys.stdin)
    attempt = int(os.environ.get("JETAGENT_ATTEMPT", "1"))
    print("task %s, attempt %d" % (envelope["id"], attempt), file=sys.stderr)
    try:
        answer = handle(envelope.get("payload"), attempt)
    except TryLater as e:
        print(e, file=sys.stderr)
        return EX_TEMPFAIL
    except BadTask as e:
        print(e, file=sys.stderr)
        return 2
    json.dump(answer, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
