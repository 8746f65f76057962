"""The pyroext model zoo: Pyro model/guide pairs, each with an exact reference where one exists."""
