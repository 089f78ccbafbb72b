"""Decision rules of dynamic sparse training, each applied by a stage: rewinding (lottery tickets), splicing (DNS) and regrowth (RigL)."""
