//! Device sessions: `device.register` (a session key from the controller's random source,
//! within the scene's cap), `device.locate` and `device.deregister` (only with the device's
//! own key).

use subtle::ConstantTimeEq;

use super::{err, Controller, DeviceRec, PairRec};
use crate::control::protocol::{ControlError, DeviceDeregistered, DeviceLocation, ErrorCode};

impl Controller {
    pub(super) fn device_register(
        &mut self,
        scene: u32,
        name: Option<String>,
    ) -> Result<DeviceLocation, ControlError> {
        self.scene(scene)?;
        if name.as_ref().is_some_and(|n| n.len() > 128) {
            return Err(err(
                ErrorCode::InvalidValue,
                "name is at most 128 characters",
            ));
        }
        let devices = self.devices.values().filter(|d| d.scene == scene).count();
        if devices >= self.config.max_devices_per_scene {
            return Err(err(
                ErrorCode::SceneFull,
                format!("scene {scene} holds {devices} devices, the most this controller allows"),
            ));
        }
        // Refuse before creating anything if no live pair serves the scene.
        self.serving_pair(scene)?;
        let id = self.meta.next_device;
        self.meta.next_device += 1;
        let key = self.random.session_key().to_hex();
        self.devices.insert(
            id,
            DeviceRec {
                scene,
                key: key.clone(),
                name,
            },
        );
        self.bump_scene(scene);
        let mut location = self.location(id, scene)?;
        location.key = Some(key);
        Ok(location)
    }

    pub(super) fn device_deregister(
        &mut self,
        device: u32,
        key: &str,
    ) -> Result<DeviceDeregistered, ControlError> {
        let d = self.device(device)?;
        if !bool::from(d.key.as_bytes().ct_eq(key.trim().as_bytes())) {
            return Err(err(ErrorCode::Unauthorized, "wrong key for this device"));
        }
        let scene = d.scene;
        self.devices.remove(&device);
        self.bump_scene(scene);
        Ok(DeviceDeregistered {
            device,
            epoch: self.meta.epoch,
        })
    }

    /// Where `device` of `scene` is homed now.
    pub(super) fn location(&self, device: u32, scene: u32) -> Result<DeviceLocation, ControlError> {
        let (pair, rec) = self.serving_pair(scene)?;
        Ok(DeviceLocation {
            device,
            scene,
            pair,
            udp: rec.udp.to_string(),
            epoch: self.meta.epoch,
            key: None,
        })
    }

    fn serving_pair(&self, scene: u32) -> Result<(u32, &PairRec), ControlError> {
        let s = self.scene(scene)?;
        s.pair
            .and_then(|id| self.pairs.get(&id).filter(|p| p.alive).map(|p| (id, p)))
            .ok_or_else(|| {
                err(
                    ErrorCode::NoPair,
                    format!("no live pair in region `{}` serves scene {scene}", s.region),
                )
            })
    }
}
