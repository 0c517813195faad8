"""Selection: rejection-sampling policies over scored candidates, reward-guided best-of-N, SFT and
DPO exports of what was kept."""
