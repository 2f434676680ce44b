_base_ = './two_phase_test.py'
model = dict(backbone=dict(frozen_stages=-1, norm_eval=False))
imat_next_phase = None
imat_previous_phase = 'two_phase_test.py'
