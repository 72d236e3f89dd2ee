print("qlab-bench: nothing yet")
